"""``sitegen serve SPEC [--host 127.0.0.1] [--port 8000]``: preview with live reload."""

from __future__ import annotations

from ..errors import ServeError

HELP = "preview a spec's site locally, rebuilding and reloading the page on every change"


def add_arguments(parser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the app spec (YAML), e.g. app.yaml")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--strict", action="store_true", help="treat spec warnings as errors")
    parser.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="where converted models are cached (default: $SITEGEN_CACHE or "
                             "~/.cache/sitegen)")


def run(args) -> int:
    try:  # here, not at the top: only serve needs livereload (issue 10)
        from ..serve import PreviewServer
    except ModuleNotFoundError as e:
        package = (e.name or "").partition(".")[0]
        if package not in ("livereload", "tornado"):
            raise
        raise ServeError(f"sitegen serve needs the {package!r} package, which is not installed; "
                         f"install it with: pip install livereload") from None
    PreviewServer(args.spec, host=args.host, port=args.port, strict=args.strict,
                  cache_dir=args.cache_dir).serve()
    return 0
