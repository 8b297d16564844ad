"""``sitegen.mkdocs``: a MkDocs plugin that puts sitegen apps inside the pages of any MkDocs site.

In ``mkdocs.yml``::

    plugins:
      - sitegen:
          spec: app.yaml          # relative to mkdocs.yml

In a page, ``{{ sitegen_app("helper") }}`` embeds the app whose path is ``/helper/`` (``"/"``
names the spec's front-page app; an app's title works too), chat or form alike;
``{{ sitegen_app("helper", height="40rem") }}`` sets its height. A marker inside a code span or
a fenced code block is left as it is, so pages can document the marker.

How (issue 16): the sitegen site of the spec (pages, runtime, shaders, shards) is built once per
MkDocs build into ``SITE_DIR/sitegen/``, whatever the number of pages that embed apps; a marker
becomes an ``<iframe>`` of its app's page there and a link to it. With ``colours: page`` (the
default) a small script (``embed.js``) gives each embedded app the colours and font of the
MkDocs theme around it, and follows the theme's light/dark switch. Every error in the spec fails
the MkDocs build as ``FILE:LINE:COL: key.path: message``; ``mkdocs serve`` watches the spec and
rebuilds when it changes.
"""

from __future__ import annotations

import ast
import hashlib
import html
import logging
import os
import posixpath
import re
import shutil
from pathlib import Path

from mkdocs.config import base
from mkdocs.config import config_options as c
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin

from ..build import build_site
from ..errors import SitegenError
from ..spec import SpecErrors, load_spec
from ..spec.schema import display_path

__all__ = ["SitegenPlugin", "SitegenPluginConfig", "SUBDIR"]

SUBDIR = "sitegen"  # where the sitegen site goes inside the MkDocs site_dir
_EMBED_JS = Path(__file__).with_name("embed.js")
_CSS_LENGTH = re.compile(r"(\d+(\.\d+)?)(px|rem|em|vh|svh|dvh|%)")
# A marker, loosely: anything that starts like one is parsed (and refused when malformed),
# so a typo never ships as literal text.
_MARKER = re.compile(r"\{\{\s*sitegen_app\b(?P<rest>.*?)\}\}", re.S)
_MARKER_START = re.compile(r"\{\{\s*sitegen_app\b")
# Code where a marker is text, not a marker: fenced blocks, then inline code spans.
_FENCE = re.compile(r"^[ \t]{0,3}(?P<f>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}(?P=f)[`~]*[ \t]*$|\Z)", re.M | re.S)
_CODE_SPAN = re.compile(r"(?P<t>`+)(?!`)(?:(?!\n[ \t]*\n).)+?(?<!`)(?P=t)(?!`)", re.S)
_TOKEN = "sitegen-embed-{n}-7f3a"  # stands in for an embed through Markdown (no Markdown syntax)

log = logging.getLogger("mkdocs.plugins.sitegen")


class SitegenPluginConfig(base.Config):
    """The plugin's options in ``mkdocs.yml`` (``plugins: [sitegen: {...}]``)."""

    spec = c.Type(str, default="app.yaml")
    """The app spec, relative to ``mkdocs.yml``."""
    height = c.Type(str, default="36rem")
    """Height of an embedded app (a CSS length such as ``36rem`` or ``600px``); a marker's
    ``height="..."`` overrides it."""
    colours = c.Choice(("page", "app"), default="page")
    """``page``: embedded apps take the MkDocs theme's colours and font (and follow its
    light/dark switch); ``app``: they keep the spec's ``ui.theme`` and ``ui.accent``."""


class SitegenPlugin(BasePlugin[SitegenPluginConfig]):
    """Embeds the apps of one sitegen spec in a MkDocs site."""

    # Models resolved (converted, looked up in the conversion cache) per spec, for the life of
    # the process: `mkdocs serve` makes a new plugin for every rebuild, and an unchanged model
    # must not be hashed again each time a page is saved. The key includes the source's mtime.
    _resolved_by_spec: dict[str, dict] = {}

    def __init__(self):
        super().__init__()
        self._spec = None
        self._spec_path: Path | None = None
        self._embed_name = ""
        self._embeds: dict[str, list[str]] = {}  # page src_uri -> the HTML of its embeds, in order
        self._problems: list[str] = []  # bad markers of every page, reported together (on_env)

    # --- the spec, loaded once per build -----------------------------------------------------

    def on_config(self, config):
        height = self.config.height
        if not _CSS_LENGTH.fullmatch(height):
            raise PluginError(f"sitegen: plugins.sitegen.height: expected a CSS length such as "
                              f"'36rem' or '600px', got {height!r}")
        base_dir = Path(config.config_file_path or ".").resolve().parent
        self._spec_path = (base_dir / self.config.spec).resolve()
        if not self._spec_path.is_file():
            what = "is a folder, not a spec file" if self._spec_path.is_dir() else "no such spec file"
            raise PluginError(f"sitegen: plugins.sitegen.spec: {self.config.spec!r}: {what} "
                              f"(the path is relative to mkdocs.yml: {self._spec_path})")
        try:
            self._spec = load_spec(self._spec_path)
        except SitegenError as e:
            raise PluginError(_error_text(e)) from None
        for warning in self._spec.warnings:
            # With `mkdocs build --strict`, a warning fails the build, like sitegen's --strict.
            log.warning("sitegen: %s", warning)
        if getattr(self._spec.site, "offline", False) and "offline" in self._spec.site._value_nodes:
            # Asked for in so many words (it is on by default): the service worker would cache
            # only the apps under sitegen/, not the docs around them, so the plugin adds none.
            line, col = _locate(self._spec, "site.offline") or (None, None)
            where = f"{self._spec_path}:{line}:{col}" if line else str(self._spec_path)
            log.warning("sitegen: %s: site.offline: has no effect inside a MkDocs site (the plugin "
                        "adds no service worker); remove it, or build the app on its own with "
                        "`sitegen build`", where)
        data = _EMBED_JS.read_bytes()
        self._embed_name = f"embed-{hashlib.sha256(data).hexdigest()[:12]}.js"
        return config

    def on_files(self, files, config):
        for f in files:
            if f.dest_uri == SUBDIR or f.dest_uri.startswith(SUBDIR + "/"):
                raise PluginError(f"sitegen: {f.abs_src_path or f.src_uri}: the sitegen plugin "
                                  f"writes the apps into {SUBDIR}/ of the site, so the docs "
                                  f"cannot have a {SUBDIR}/ folder of their own: rename it")
        return files

    # --- markers -> iframes ------------------------------------------------------------------

    def on_page_markdown(self, markdown, page, config, files):
        self._embeds.pop(page.file.src_uri, None)
        if not _MARKER_START.search(markdown):
            return markdown
        code = [m.span() for m in _FENCE.finditer(markdown)]
        code += [m.span() for m in _CODE_SPAN.finditer(markdown)
                 if not any(a <= m.start() < b for a, b in code)]
        in_code = lambda pos: any(a <= pos < b for a, b in code)  # noqa: E731
        where = _Where(page, markdown)
        embeds: list[str] = []
        out, last = [], 0
        for start in _MARKER_START.finditer(markdown):
            pos = start.start()
            if pos < last or in_code(pos):
                continue
            m = _MARKER.match(markdown, pos)
            if m is None:
                self._problems.append(f"{where(pos)}: unclosed sitegen_app marker: write "
                                      f"{{{{ sitegen_app(\"PATH\") }}}}")
                continue
            try:
                name, height = self._parse_marker(m.group("rest"), where(pos))
                block = self._embed(name, height, page, config, where(pos))
            except _MarkerError as e:
                self._problems.append(str(e))
                block = ""
            out.append(markdown[last:pos])
            out.append(_TOKEN.format(n=len(embeds)))
            embeds.append(block)
            last = m.end()
        out.append(markdown[last:])
        self._embeds[page.file.src_uri] = embeds
        return "".join(out)

    def on_env(self, env, config, files):
        # Every page has been read: report every bad marker of the site at once.
        if self._problems:
            raise PluginError("sitegen: errors in the pages' sitegen_app markers:\n" +
                              "\n".join(self._problems))
        return env

    def on_page_content(self, html_text, page, config, files):
        embeds = self._embeds.get(page.file.src_uri)
        if not embeds:
            return html_text
        for n, block in enumerate(embeds):
            token = _TOKEN.format(n=n)
            # A marker alone on its line is a paragraph of its own: the embed replaces it whole.
            html_text, k = re.subn(rf"<p>\s*{re.escape(token)}\s*</p>", lambda _: block, html_text)
            if not k:
                html_text = html_text.replace(token, block)
        if self.config.colours == "page":
            src = self._rel(f"{SUBDIR}/assets/{self._embed_name}", page)
            html_text += f'\n<script src="{html.escape(src, quote=True)}" defer></script>\n'
        return html_text

    def _parse_marker(self, rest: str, where: str) -> tuple[str, str]:
        """``("helper")`` or ``("helper", height="40rem")`` → (name, height)."""
        usage = 'write {{ sitegen_app("/helper/") }} or {{ sitegen_app("helper", height="40rem") }}'
        try:
            call = ast.parse("sitegen_app" + rest.strip(), mode="eval").body
        except SyntaxError:
            call = None
        if not isinstance(call, ast.Call) or len(call.args) != 1 or \
                not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
            raise _MarkerError(f"{where}: cannot read the marker "
                              f"'{{{{ sitegen_app{rest.strip()[:60]} }}}}': {usage}")
        height = self.config.height
        for kw in call.keywords:
            if kw.arg != "height" or not isinstance(kw.value, ast.Constant) or \
                    not isinstance(kw.value.value, str):
                raise _MarkerError(f"{where}: sitegen_app() takes the app and an optional "
                                  f"height=\"...\" only: {usage}")
            height = kw.value.value
            if not _CSS_LENGTH.fullmatch(height):
                raise _MarkerError(f"{where}: sitegen_app(height={height!r}): expected a "
                                  f"CSS length such as '36rem' or '600px'")
        return call.args[0].value, height

    def _embed(self, name: str, height: str, page, config, where: str) -> str:
        app = self._app(name, where)
        target = f"{SUBDIR}/{app.path}/" if app.path else f"{SUBDIR}/"
        if not config.use_directory_urls:
            target += "index.html"
        url = html.escape(self._rel(target, page), quote=True)
        title = html.escape(app.title, quote=True)
        style = (f"width:100%;height:{height};border:1px solid rgba(128,128,128,.4);"
                 f"border-radius:6px;display:block")
        return (f'<div class="sitegen-embed" data-app="{html.escape(display_path(app.path))}" '
                f'data-colours="{self.config.colours}">'
                f'<iframe src="{url}" title="{title}" loading="lazy" style="{style}" '
                f'allow="clipboard-write"></iframe>'
                f'<p class="sitegen-embed-link"><a href="{url}">Open {title} in its own page</a></p>'
                f'</div>')

    def _app(self, name: str, where: str):
        wanted = name.strip().strip("/")
        for app in self._spec.apps:
            if app.path == wanted:
                return app
        for app in self._spec.apps:
            if app.title == name:
                return app
        known = ", ".join(f"{display_path(a.path)!r} ({a.title})" for a in self._spec.apps)
        raise _MarkerError(f"{where}: sitegen_app({name!r}): no app with that path or "
                          f"title in {self._spec_path} (its apps: {known})")

    @staticmethod
    def _rel(target: str, page) -> str:
        """``target`` (a path from the site root) relative to ``page``'s URL."""
        page_dir = page.url if page.url.endswith("/") or not page.url else posixpath.dirname(page.url)
        rel = posixpath.relpath(target, page_dir or ".")
        return rel + "/" if target.endswith("/") and not rel.endswith("/") else rel

    # --- the sitegen site, once per build ----------------------------------------------------

    def on_post_build(self, config):
        dest = Path(config.site_dir) / SUBDIR
        if dest.exists():
            shutil.rmtree(dest)
        resolved = self._resolved_by_spec.setdefault(str(self._spec_path), {})
        try:
            result = build_site(self._spec, dest, resolved=resolved, progress=_LogProgress())
        except SitegenError as e:
            if e.key and e.line is None and e.file == str(self._spec.path):
                # A build-time problem of one key (a converted folder missing a shard): its line.
                e.line, e.col = _locate(self._spec, e.key) or (None, None)
            raise PluginError(_error_text(e)) from None
        (dest / "assets" / self._embed_name).write_bytes(_EMBED_JS.read_bytes())
        for model, folder, url in result.uploads:
            log.info("sitegen: upload the shards of model %r (%s) to %s", model, folder, url)

    def on_serve(self, server, config, builder):
        if self._spec_path is not None:
            server.watch(os.fspath(self._spec_path))
            theme_dir = self._spec.site.theme_dir if self._spec is not None else None
            if theme_dir is not None:
                server.watch(os.fspath(theme_dir))
        return server


class _MarkerError(Exception):
    """A bad marker in a page (``FILE:LINE: message``), collected and reported with the others."""


class _Where:
    """``FILE:LINE`` of a position in a page's Markdown (front matter counted)."""

    def __init__(self, page, markdown: str):
        self.file = page.file.abs_src_path or page.file.src_uri
        raw = page.file.content_string if page.file.abs_src_path else markdown
        self.offset = raw[:len(raw) - len(markdown)].count("\n") if raw.endswith(markdown) else 0
        self.markdown = markdown

    def __call__(self, pos: int) -> str:
        return f"{self.file}:{self.offset + self.markdown.count(chr(10), 0, pos) + 1}"


class _LogProgress:
    """A sitegen progress callback that logs a line per phase and quarter (model conversion)."""

    def __init__(self):
        self._last: tuple[str, int] | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        quarter = 4 * done // total if total > 0 else 0
        if self._last is None or self._last[0] != phase or quarter > self._last[1]:
            self._last = (phase, quarter)
            pct = f"{100 * done // total}%" if total > 0 else "..."
            # Copying a converted model into the site is quick; converting one is worth a line.
            (log.debug if phase.startswith("copy") else log.info)("sitegen: %s: %s", phase, pct)


def _locate(spec, key: str) -> tuple[int, int] | None:
    """Line and column of a dotted key path (``models.tiny.source``, ``apps[0].ui``) in ``spec``."""
    obj, node = spec, None
    try:
        for part in re.findall(r"\[\d+\]|[^.\[\]]+", key):
            if part.startswith("["):
                obj = obj[int(part[1:-1])]
                node = obj._node
            elif isinstance(obj, dict):
                obj = obj[part]
                node = getattr(obj, "_node", node)
            else:
                node = obj.node_of(part)
                obj = getattr(obj, part)
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    if node is None:
        return None
    return node.start_mark.line + 1, node.start_mark.column + 1


def _error_text(e: SitegenError) -> str:
    """Every error of a spec, one per line as FILE:LINE:COL: key.path: message."""
    if isinstance(e, SpecErrors):
        errors = [str(p) for p in e.problems if not p.warning]
        return "sitegen: errors in the spec:\n" + "\n".join(errors or [str(e)])
    return f"sitegen: {e}"
