"""``sitegen new DIR``: scaffold a working app folder (an ``app.yaml`` with a comment on every key)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SitegenError

HELP = "create a new app folder with a commented app.yaml"

SCAFFOLD = Path(__file__).with_name("scaffold")


def add_arguments(parser) -> None:
    parser.add_argument("dir", metavar="DIR", help="folder to create (must not exist or be empty)")


def run(args) -> int:
    target = Path(args.dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SitegenError(f"{str(target)!r} already exists and is not an empty folder; "
                           f"choose a new folder name")
    target.mkdir(parents=True, exist_ok=True)
    for src in sorted(SCAFFOLD.iterdir()):
        if src.is_file():
            (target / src.name).write_bytes(src.read_bytes())
    spec = target / "app.yaml"
    print(f"created {spec}\n"
          f"next: sitegen serve {spec}   (preview)\n"
          f"      sitegen build {spec} -o site   (build)")
    return 0
