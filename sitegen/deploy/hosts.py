"""Host profiles (issue 15, item 3): what each static host needs beside the site, and its limits.

One row per host in :data:`HOSTS`; the build calls :func:`host_files` for the extra files and
:func:`check_limits` on the finished folder, before anything is swapped in, so a site the
host would refuse never reaches OUT (or a Pages branch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import BuildError

__all__ = ["Host", "HOSTS", "base_path", "headers_file", "check_limits", "site_files",
           "ISOLATION_HEADERS"]

MIB = 1024 ** 2
GB = 1000 ** 3

# What a cross-origin isolated page needs (SharedArrayBuffer for Wasm threads); the same
# headers `sitegen serve` sends (sitegen/serve.py) and the service worker adds where the host
# cannot send them (app_templates/offline/sw.js).
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


@dataclass(frozen=True)
class Host:
    """One static host: its name in messages, which extra files it reads, and its limits."""

    name: str
    title: str                    # as written in messages: "GitHub Pages"
    headers: bool                 # reads a `_headers` file (Cloudflare Pages, Netlify)
    nojekyll: bool                # needs `.nojekyll` (GitHub Pages runs Jekyll otherwise)
    max_file: int | None = None   # bytes per file
    max_site: int | None = None   # bytes of the whole site
    max_files: int | None = None  # number of files
    limits_doc: str = ""          # where the limits are documented, for messages


HOSTS: dict[str, Host] = {h.name: h for h in (
    Host("generic", "a generic static host", headers=False, nojekyll=False),
    Host("github-pages", "GitHub Pages", headers=False, nojekyll=True, max_file=100 * MIB,
         max_site=1 * GB, limits_doc="https://docs.github.com/en/pages/getting-started-with-"
                                     "github-pages/github-pages-limits"),
    Host("cloudflare-pages", "Cloudflare Pages", headers=True, nojekyll=False,
         max_file=25 * MIB, max_files=20_000,
         limits_doc="https://developers.cloudflare.com/pages/platform/limits/"),
    Host("netlify", "Netlify", headers=True, nojekyll=False),
)}

# Files the build writes that are the host's configuration, not part of the site proper
# (never precached by the service worker).
HOST_FILES = ("_headers", ".nojekyll")


def base_path(base_url: str | None) -> str:
    """The URL path the site lives under: '/demo-repo/' for https://u.github.io/demo-repo/."""
    if not base_url:
        return "/"
    path = urlsplit(base_url).path or "/"
    return path if path.endswith("/") else path + "/"


def headers_file(base: str, *, shards: list[str], manifests: list[str]) -> str:
    """A `_headers` file (the syntax Cloudflare Pages and Netlify share).

    Both hosts apply every rule that matches a path and join repeated headers, so no path
    matches two rules that set the same header: `/assets/*` (content-hashed names) and each
    shard file are cached for a year, each manifest and everything else is revalidated.
    Shards keep their names when a model is reconverted, but the loader fetches them with
    `cache: "no-store"` and checks each one's sha256, so a stale copy is never used.
    """
    lines = ["# Written by `sitegen build` (site.host); see docs/deploy.md.", f"{base}*"]
    lines += [f"  {k}: {v}" for k, v in ISOLATION_HEADERS.items()]
    lines += ["  Cross-Origin-Resource-Policy: same-origin", "  X-Content-Type-Options: nosniff",
              "", f"{base}assets/*", "  Cache-Control: public, max-age=31536000, immutable"]
    for path in shards:
        lines += ["", f"{base}{path}", "  Cache-Control: public, max-age=31536000, immutable"]
    for path in manifests:
        lines += ["", f"{base}{path}", "  Cache-Control: no-cache"]
    return "\n".join(lines) + "\n"


def site_files(root: Path) -> list[tuple[str, int]]:
    """Every file of a built site as (POSIX path, bytes), sorted."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            out.append((p.relative_to(root).as_posix(), p.stat().st_size))
    return sorted(out)


def _of(host: Host) -> str:
    """'GitHub Pages'' (possessive)."""
    return host.title + ("'" if host.title.endswith("s") else "'s")


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def check_limits(host: Host, files: list[tuple[str, int]], *, file: str | None = None,
                 line: int | None = None, col: int | None = None,
                 weights_hint: str = "") -> None:
    """Raise a BuildError naming the file and the limit when ``files`` break ``host``'s limits.

    ``weights_hint`` names the models whose shards are in the site (for the advice to host
    them elsewhere).
    """
    where = dict(file=file, line=line, col=col, key="site.host")
    advice = (f"; host the weights elsewhere: set models.<name>.host.base_url{weights_hint} "
              f"(a Hugging Face repository or a bucket, see docs/deploy.md)")
    if host.max_file is not None:
        for path, size in files:
            if size > host.max_file:
                fix = ""
                parts = path.split("/")
                if parts[0] == "models" and len(parts) == 3:
                    fix = (f"; lower models.{parts[1]}.shard_size (e.g. 16MiB), or host the "
                           f"weights elsewhere: set models.{parts[1]}.host.base_url (a Hugging "
                           f"Face repository or a bucket, see docs/deploy.md)")
                raise BuildError(f"{path} is {_mib(size)}, over {_of(host)} limit of "
                                 f"{_mib(host.max_file)} per file ({host.limits_doc}){fix}",
                                 **where)
    if host.max_files is not None and len(files) > host.max_files:
        raise BuildError(f"the site has {len(files)} files, over {_of(host)} limit of "
                         f"{host.max_files:,} files ({host.limits_doc}); use a larger "
                         f"models.<name>.shard_size for fewer shards{advice}", **where)
    total = sum(size for _, size in files)
    if host.max_site is not None and total > host.max_site:
        raise BuildError(f"the site is {total / GB:.2f} GB, over {_of(host)} limit of "
                         f"{host.max_site / GB:g} GB for a site ({host.limits_doc}){advice}",
                         **where)
