"""Offline and installable (issue 15, item 5): the service worker and the web app manifest.

The service worker's source is ``app_templates/offline/sw.js``; the build fills in its
``BUILD`` constant with the list of shell files and their sha256, and a version that hashes
that list, so every change to any shell file gives a new ``sw.js`` (which is what makes the
browser install the new build) and a new cache name.
"""

from __future__ import annotations

import hashlib
import json
from html import escape
from pathlib import Path, PurePosixPath

from .. import resources

__all__ = ["SW_FILE", "MANIFEST_FILE", "REGISTER_SCRIPT", "web_manifest", "default_icon",
           "service_worker", "shell_files"]

SW_FILE = "sw.js"
MANIFEST_FILE = "manifest.webmanifest"
REGISTER_SCRIPT = resources.APP_TEMPLATES / "offline" / "register.js"
_SW_SOURCE = resources.APP_TEMPLATES / "offline" / "sw.js"
_PLACEHOLDER = '/*SITEGEN_BUILD*/ { version: "dev", shell: [], isolate: true }'


def web_manifest(*, name: str, description: str, language: str, theme_color: str,
                 icons: list[dict]) -> dict:
    """The web app manifest: the front page as start URL, the whole site as scope."""
    short = name if len(name) <= 12 else name[:12].rstrip()
    return {"name": name, "short_name": short, "description": description, "lang": language,
            "start_url": "./", "scope": "./", "display": "standalone",
            "theme_color": theme_color, "background_color": "#ffffff", "icons": icons}


def default_icon(title: str, colour: str) -> bytes:
    """A square SVG icon: the title's first letter on the accent colour."""
    letter = escape((title.strip()[:1] or "S").upper())
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 512 512">'
            f'<rect width="512" height="512" rx="96" fill="{escape(colour)}"/>'
            f'<text x="256" y="340" font-family="sans-serif" font-size="280" '
            f'text-anchor="middle" fill="#ffffff">{letter}</text></svg>\n').encode()


def png_size(path: Path) -> tuple[int, int] | None:
    """Width and height of a PNG file (from its IHDR chunk), or None."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def shell_files(dest: Path, *, exclude: set[str]) -> list[dict]:
    """The app shell: every file of the site in ``dest`` but ``exclude`` (shards, host files),
    as ``{url, sha256}`` relative to the site root; a page is listed at its folder URL too."""
    entries = []
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        rel = path.relative_to(dest).as_posix()
        if rel in exclude or any(part.startswith(".") for part in PurePosixPath(rel).parts):
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        entries.append({"url": rel, "sha256": digest})
        if PurePosixPath(rel).name == "index.html":
            folder = rel[: -len("index.html")]
            entries.append({"url": folder or "./", "sha256": digest})
    return sorted(entries, key=lambda e: e["url"])


def service_worker(shell: list[dict], *, isolate: bool = True, retire: bool = False) -> str:
    """``sw.js`` for this build's shell; ``retire``: one that removes an earlier build's
    service worker and its caches (a site rebuilt with ``site.offline: false``)."""
    listing = json.dumps(shell, sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(listing.encode()).hexdigest()[:16]
    config = {"version": version, "shell": shell, "isolate": isolate}
    if retire:
        config = {"version": "retired", "shell": [], "isolate": False, "retire": True}
    build = json.dumps(config, separators=(",", ":"))
    source = _SW_SOURCE.read_text("utf-8")
    if _PLACEHOLDER not in source:
        raise RuntimeError(f"{_SW_SOURCE}: the BUILD placeholder is missing")
    return source.replace(_PLACEHOLDER, build, 1)
