"""``sitegen build SPEC [-o OUT] [--strict]``: build the static site."""

from __future__ import annotations

import sys

from ..progress import ProgressReporter

HELP = "build the static site of an app spec into a folder"


def add_arguments(parser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the app spec (YAML), e.g. app.yaml")
    parser.add_argument("-o", "--out", metavar="OUT", default="site",
                        help="output folder, replaced whole by each build (default: ./site)")
    parser.add_argument("--strict", action="store_true", help="treat spec warnings as errors")
    parser.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="where converted models are cached (default: $SITEGEN_CACHE or "
                             "~/.cache/sitegen)")


def run(args) -> int:
    from ..build import build  # here, not at the top: jinja2 and the converter load only to build
    from ..cli import print_warnings

    reporter = ProgressReporter()
    try:
        result = build(args.spec, args.out, strict=args.strict, progress=reporter,
                       cache_dir=args.cache_dir)
    finally:
        reporter.close()
    print_warnings(result.warnings)
    for model, folder, url in result.uploads:
        print(f"note: upload the shard files of model {model!r} from {folder} to {url}",
              file=sys.stderr)
    print(f"built {len(result.pages)} page{'s' if len(result.pages) != 1 else ''} into "
          f"{result.out}: {', '.join(result.pages)}")
    return 0
