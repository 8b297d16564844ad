"""``sitegen validate SPEC``: check a spec and report every problem at once."""

from __future__ import annotations

from ..spec import load_spec

HELP = "check an app spec and report every error and warning, with file:line:column"


def add_arguments(parser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the app spec (YAML), e.g. app.yaml")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")


def run(args) -> int:
    from ..cli import print_warnings

    spec = load_spec(args.spec, strict=args.strict)
    print_warnings(spec.warnings)
    n_apps, n_models = len(spec.apps), len(spec.models)
    w = len(spec.warnings)
    print(f"{args.spec}: ok ({n_apps} app{'s' if n_apps != 1 else ''}, {n_models} "
          f"model{'s' if n_models != 1 else ''}, {w} warning{'s' if w != 1 else ''})")
    return 0
