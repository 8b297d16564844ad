"""``sitegen new DIR [--github-actions]``: scaffold a working app folder (an ``app.yaml`` with a
comment on every key), and with ``--github-actions`` a workflow that deploys it to GitHub Pages."""

from __future__ import annotations

from pathlib import Path

from ..errors import SitegenError

HELP = "create a new app folder with a commented app.yaml"

SCAFFOLD = Path(__file__).with_name("scaffold")


def add_arguments(parser) -> None:
    parser.add_argument("dir", metavar="DIR", help="folder to create (must not exist or be empty)")
    parser.add_argument("--github-actions", action="store_true",
                        help="also write .github/workflows/sitegen-pages.yml at the root of the "
                             "git repository (else here): build with sitegen, deploy with the "
                             "official Pages actions; for an existing DIR with an app.yaml, "
                             "only the workflow")


def run(args) -> int:
    target = Path(args.dir)
    existing = args.github_actions and (target / "app.yaml").is_file()
    if not existing and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SitegenError(f"{str(target)!r} already exists and is not an empty folder; "
                           f"choose a new folder name")
    spec = target / "app.yaml"
    if not existing:
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted(SCAFFOLD.iterdir()):
            if src.is_file():
                (target / src.name).write_bytes(src.read_bytes())
        print(f"created {spec}\n"
              f"next: sitegen serve {spec}   (preview)\n"
              f"      sitegen build {spec} -o site   (build)")
    if args.github_actions:
        from ..deploy.workflow import write_workflow

        path = write_workflow(spec)
        print(f"created {path}\n"
              f"next: commit it, push, and choose Settings > Pages > Source: GitHub Actions")
    return 0
