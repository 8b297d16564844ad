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
    parser.add_argument("--weights-out", metavar="DIR", default=None,
                        help="where the shards of models with host.base_url go, one folder "
                             "per model, to upload there (default: OUT-weights)")
    parser.add_argument("--base-url", metavar="URL", default=None,
                        help="the URL the site is served from, instead of site.base_url "
                             "(e.g. https://USER.github.io/REPO/)")


def run(args) -> int:
    from ..build import build  # here, not at the top: jinja2 and the converter load only to build
    from ..cli import print_warnings

    reporter = ProgressReporter()
    try:
        result = build(args.spec, args.out, strict=args.strict, progress=reporter,
                       cache_dir=args.cache_dir, weights_out=args.weights_out,
                       base_url=args.base_url)
    finally:
        reporter.close()
    print_warnings(result.warnings)
    print_uploads(result.uploads)
    print(f"built {len(result.pages)} page{'s' if len(result.pages) != 1 else ''} into "
          f"{result.out}: {', '.join(result.pages)}")
    return 0


def print_uploads(uploads) -> None:
    """Say what to upload where, for models whose shards live on another origin."""
    from ..deploy.upload import describe_upload

    for model, folder, url in uploads:
        print(describe_upload(model, folder, url), file=sys.stderr)
