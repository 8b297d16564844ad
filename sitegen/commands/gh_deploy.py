"""``sitegen gh-deploy SPEC [--remote origin] [--branch gh-pages] [--message MSG]``: build the
site and commit it to the GitHub Pages branch of the spec's repository, then push (issue 15)."""

from __future__ import annotations

import sys

from ..progress import ProgressReporter

HELP = "build the site and commit it to the GitHub Pages branch (gh-pages), then push it"


def add_arguments(parser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the app spec (YAML), e.g. app.yaml")
    parser.add_argument("--remote", default="origin",
                        help="the remote to push the branch to (default: origin)")
    parser.add_argument("--branch", default="gh-pages",
                        help="the branch the site is committed to (default: gh-pages)")
    parser.add_argument("-m", "--message", default=None,
                        help="the commit message (default: 'Deployed <commit> with sitegen "
                             "<version>')")
    parser.add_argument("--base-url", metavar="URL", default=None,
                        help="the URL the site is served from (default: site.base_url, else "
                             "the remote's GitHub Pages URL, https://USER.github.io/REPO/)")
    parser.add_argument("--no-push", action="store_true",
                        help="commit to the branch but do not push it")
    parser.add_argument("--weights-out", metavar="DIR", default=None,
                        help="where the shards of models with host.base_url go, to upload "
                             "there (default: REPO-weights beside the repository)")
    parser.add_argument("--strict", action="store_true", help="treat spec warnings as errors")
    parser.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="where converted models are cached (default: $SITEGEN_CACHE or "
                             "~/.cache/sitegen)")


def run(args) -> int:
    from ..cli import print_warnings
    from ..deploy.ghpages import gh_deploy
    from .build import print_uploads

    reporter = ProgressReporter()
    try:
        r = gh_deploy(args.spec, remote=args.remote, branch=args.branch, message=args.message,
                      base_url=args.base_url, push=not args.no_push, strict=args.strict,
                      progress=reporter, cache_dir=args.cache_dir, weights_out=args.weights_out)
    finally:
        reporter.close()
    print_warnings(r.build.warnings)
    print_uploads(r.build.uploads)
    where = f" and pushed it to {r.remote}" if r.pushed else " (not pushed: --no-push)"
    print(f"committed the site ({', '.join(r.build.pages)}) to {r.branch} as {r.commit[:12]}"
          f"{where}")
    if r.url:
        print(f"it will be served at {r.url} once GitHub Pages publishes the {r.branch} branch "
              f"(Settings > Pages > Deploy from a branch)", file=sys.stderr)
    return 0
