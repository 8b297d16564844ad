"""A MkDocs plugin that embeds sitegen apps in the pages of any MkDocs site.

In ``mkdocs.yml``::

    plugins:
      - sitegen:
          spec: app.yaml          # relative to mkdocs.yml

In a page, ``{{ sitegen_app("helper") }}`` becomes an ``<iframe>`` of the app whose path is
``/helper/`` (``"/"`` names the spec's front-page app; an app's title works too). The sitegen site
(runtime, shaders, shards) is built once per MkDocs build into ``SITE_DIR/sitegen/``.
"""

from __future__ import annotations

import html
import logging
import os
import posixpath
import re
import shutil
from pathlib import Path

from mkdocs.config import config_options
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin

from .build import build_site
from .errors import SitegenError
from .spec import SpecErrors, load_spec

__all__ = ["SitegenPlugin", "SUBDIR"]

SUBDIR = "sitegen"  # where the sitegen site goes inside the MkDocs site_dir

log = logging.getLogger("mkdocs.plugins.sitegen")

_MARKER = re.compile(r"""\{\{\s*sitegen_app\(\s*(?P<q>["'])(?P<name>.*?)(?P=q)\s*\)\s*\}\}""")


def _error_text(e: SitegenError) -> str:
    if isinstance(e, SpecErrors):
        errors = [str(p) for p in e.problems if not p.warning]
        return "sitegen: errors in the spec:\n" + "\n".join(errors or [str(e)])
    return f"sitegen: {e}"


class SitegenPlugin(BasePlugin):
    config_scheme = (
        ("spec", config_options.Type(str, default="app.yaml")),
        ("height", config_options.Type(str, default="36rem")),
    )

    def __init__(self):
        super().__init__()
        self._spec = None
        self._spec_path: Path | None = None
        self._resolved: dict = {}

    # --- the spec, loaded once per build ---------------------------------------------------

    def on_config(self, config):
        base = Path(config["config_file_path"] or ".").resolve().parent
        self._spec_path = (base / self.config["spec"]).resolve()
        if not self._spec_path.is_file():
            raise PluginError(f"sitegen: {self.config['spec']}: spec file not found "
                              f"(plugins.sitegen.spec is relative to mkdocs.yml: {self._spec_path})")
        try:
            self._spec = load_spec(self._spec_path)
        except SitegenError as e:
            raise PluginError(_error_text(e)) from e
        for warning in self._spec.warnings:
            log.warning("sitegen: %s", warning)
        return config

    def _app_path(self, name: str, page) -> str:
        wanted = name.strip().strip("/")
        for app in self._spec.apps:
            if app.path == wanted or app.title == name:
                return app.path
        known = ", ".join(repr("/" + a.path + "/" if a.path else "/") for a in self._spec.apps)
        raise PluginError(f"sitegen: {page.file.src_uri}: sitegen_app({name!r}): no app with "
                          f"that path or title in {self.config['spec']} (apps: {known})")

    # --- markers -> iframes ------------------------------------------------------------------

    def on_page_markdown(self, markdown, page, config, files):
        if "sitegen_app" not in markdown:
            return markdown
        page_dir = posixpath.dirname(page.url) if not page.url.endswith("/") else page.url
        palette = self._palette(config)

        def embed(m: re.Match) -> str:
            name = m.group("name")
            app_path = self._app_path(name, page)
            target = posixpath.join(SUBDIR, app_path, "") if app_path else SUBDIR + "/"
            url = posixpath.relpath(target, page_dir or ".") + "/"
            title = next(a.title for a in self._spec.apps if a.path == app_path)
            style = f"width:100%;height:{self.config['height']};border:1px solid {palette};"
            t = html.escape(title, quote=True)
            u = html.escape(url, quote=True)
            return (f'<div class="sitegen-embed">'
                    f'<iframe src="{u}" title="{t}" loading="lazy" style="{style}'
                    f'border-radius:6px" allow="clipboard-write"></iframe>'
                    f'<p><a href="{u}">Open {t} in its own page</a></p></div>')

        return _MARKER.sub(embed, markdown)

    @staticmethod
    def _palette(config) -> str:
        """A border colour from the theme's palette when it names one (Material), else grey."""
        theme = config["theme"]
        try:
            palette = theme["palette"]
        except (KeyError, TypeError):
            palette = None
        if isinstance(palette, list):
            palette = palette[0] if palette else None
        primary = palette.get("primary") if isinstance(palette, dict) else None
        if isinstance(primary, str) and re.fullmatch(r"[a-z-]+", primary):
            return primary.replace("-", "")
        return "#8884"

    # --- the sitegen site, once per build -------------------------------------------------------

    def on_post_build(self, config):
        dest = Path(config["site_dir"]) / SUBDIR
        if dest.exists():
            shutil.rmtree(dest)
        try:
            build_site(self._spec, dest, resolved=self._resolved)
        except SitegenError as e:
            raise PluginError(_error_text(e)) from e

    def on_serve(self, server, config, builder):
        if self._spec_path is not None:
            server.watch(os.fspath(self._spec_path))
        return server
