"""``sitegen build``: one straight pipeline from a spec to a static site.

1. load and validate the spec (every error at once);
2. resolve each model an app uses: an already-converted folder as is, an
   ``https://`` folder by URL, anything else through ``sitegen.convert``'s cache;
3. into a fresh temporary folder next to OUT: copy ``runtime/`` and ``shaders/``
   under one content-hashed folder, the stylesheets and favicon under hashed
   names, the converted models, then render every page and write its ``app.json``;
4. the host's files (issue 15: ``404.html``, ``.nojekyll``, ``_headers``), the service worker
   and web app manifest, then the host's limits checked on the finished folder;
5. swap the temporary folder in for OUT (and the shards of models hosted elsewhere, written
   to a folder of their own, ``<OUT>-weights/``, in for that folder).

Nothing is written into OUT until everything has been gathered and rendered, so
a failed or interrupted build leaves the previous OUT as it was. Every URL the
build writes is relative, so the site works under any base path; no timestamps
or absolute paths end up in the output, so two builds are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import jinja2

from . import resources
from .convert.manifest import read_manifest
from .deploy import hosts, offline
from .errors import BuildError, ConvertError, SitegenError
from .progress import ProgressFn
from .spec import App, Problem, Spec, load_spec
from .spec.schema import SETTINGS_BOUNDS, display_path
from .spec.template import parse_template

__all__ = ["build", "build_site", "BuildResult", "default_cache_dir", "MARKER", "APP_FORMAT",
           "APP_FORMAT_VERSION"]

MARKER = ".sitegen-build"  # marks a folder this module wrote, so a rebuild may replace it
_MARKER_TEXT = "This folder was written by `sitegen build`; the next build replaces it whole.\n"
APP_FORMAT = "sitegen-app"
APP_FORMAT_VERSION = 1
_HASH_LEN = 12
_SKIP_NAMES = {"__pycache__", "node_modules"}


def default_cache_dir() -> Path:
    """``$SITEGEN_CACHE``, else ``$XDG_CACHE_HOME/sitegen`` (``~/.cache/sitegen``)."""
    if os.environ.get("SITEGEN_CACHE"):
        return Path(os.environ["SITEGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sitegen"


@dataclass
class BuildResult:
    """What a build made. ``uploads`` lists shard folders the author must host elsewhere."""

    out: Path
    pages: list[str]
    warnings: list[Problem] = field(default_factory=list)
    uploads: list[tuple[str, Path, str]] = field(default_factory=list)  # (model, folder, base_url)
    spec: Spec | None = None


@dataclass
class _Model:
    """A model ready to publish: a local converted folder, or a URL of one."""

    name: str
    folder: Path | None      # local converted folder (manifest.json + shards)
    url: str | None          # remote converted folder (ends with '/')
    host_url: str | None     # host.base_url: shards live there instead of on this site


def build(spec_path: str | os.PathLike, out: str | os.PathLike, *, strict: bool = False,
          progress: ProgressFn | None = None, cache_dir: str | os.PathLike | None = None,
          weights_out: str | os.PathLike | None = None, base_url: str | None = None,
          host: str | None = None) -> BuildResult:
    """Build the site of ``spec_path`` into ``out``, replacing a previous build there.

    Shards of models with ``host.base_url`` go to ``weights_out`` (default ``<OUT>-weights``),
    one folder per model, ready to upload; ``base_url`` overrides ``site.base_url`` and
    ``host`` ``site.host`` (``sitegen gh-deploy`` builds for ``github-pages``).
    """
    spec = load_spec(spec_path, strict=strict)
    if base_url is not None:
        spec.site.base_url = check_base_url(base_url)
    if host is not None:
        if host not in hosts.HOSTS:
            raise BuildError(f"unknown host {host!r} (known: {', '.join(hosts.HOSTS)})")
        spec.site.host = host
    out = Path(out).resolve()
    _check_out(out, spec)
    weights = Path(weights_out).resolve() if weights_out is not None else \
        out.with_name(out.name + "-weights")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    wtmp = None
    try:
        result = build_site(spec, tmp, progress=progress, cache_dir=cache_dir,
                            service_worker=True)
        if result.uploads:
            _check_out(weights, spec, flag="--weights-out")
            if weights == out or out in weights.parents or weights in out.parents:
                raise BuildError(f"--weights-out {str(weights)!r} overlaps the site's folder "
                                 f"{str(out)!r}; the weights must not be published with the "
                                 f"site: choose a folder beside it", key="--weights-out")
            weights.parent.mkdir(parents=True, exist_ok=True)
            wtmp = Path(tempfile.mkdtemp(prefix=f".{weights.name}.building-", dir=weights.parent))
            os.chmod(wtmp, 0o755)
            uploads = []
            for name, folder, url in result.uploads:
                _copy_model(_Model(name, folder, None, None), wtmp / name, progress)
                uploads.append((name, weights / name, url))
            result.uploads = uploads
            (wtmp / MARKER).write_text(_MARKER_TEXT, "utf-8")
        _swap_in(tmp, out)
        if wtmp is not None:
            _swap_in(wtmp, weights)
    except BaseException:
        # Includes KeyboardInterrupt: the half-written folders go, OUT stays as it was.
        shutil.rmtree(tmp, ignore_errors=True)
        if wtmp is not None:
            shutil.rmtree(wtmp, ignore_errors=True)
        raise
    result.out = out
    return result


def check_base_url(value: str, *, flag: str = "--base-url") -> str:
    """A ``--base-url`` value as ``site.base_url`` holds it (http(s), ending with '/')."""
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise BuildError(f"expected an http:// or https:// URL such as "
                         f"https://USER.github.io/REPO/, got {value!r}", key=flag)
    return value if value.endswith("/") else value + "/"


def build_site(spec: Spec, dest: Path, *, progress: ProgressFn | None = None,
               cache_dir: str | os.PathLike | None = None,
               resolved: dict | None = None, service_worker: bool = False) -> BuildResult:
    """Write the site of a loaded ``spec`` into the empty folder ``dest`` (the pipeline proper).

    ``sitegen serve`` calls this directly with a fresh folder per build, passing the same
    ``resolved`` dict each time so an unchanged model is not looked up in the cache again.
    ``service_worker``: add the service worker and web app manifest when ``site.offline``
    (``build`` does; a preview never does, so it always shows the latest files).
    """
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)  # mkdtemp makes 0700; a site is meant to be read by a web server
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    used = sorted({app.model for app in spec.apps})
    models = {}
    for name in used:
        key = _model_key(spec, name)
        if resolved is not None and key in resolved:
            models[name] = resolved[key]
            continue
        models[name] = _resolve_model(spec, name, cache, progress)
        if resolved is not None:
            resolved[key] = models[name]

    theme_dir: Path | None = spec.site.theme_dir
    env = _jinja_env(theme_dir)
    assets = _Assets(dest)
    runtime_url = assets.copy_runtime()
    css_url = assets.add_file(_static_file(theme_dir, "sitegen.css"), "sitegen", ".css")
    favicon_url = None
    if spec.site.favicon is not None:
        favicon_url = assets.add_file(spec.site.favicon, "favicon", spec.site.favicon.suffix)
    pwa = _offline_assets(spec, assets, favicon_url) \
        if service_worker and spec.site.offline else None

    result = BuildResult(out=dest, pages=[], warnings=list(spec.warnings), spec=spec)
    for name, model in models.items():
        if model.folder is not None:
            _copy_model(model, dest / "models" / name, progress)
            if model.host_url:
                result.uploads.append((name, model.folder, model.host_url))

    for app in spec.apps:
        page_dir = dest / app.path if app.path else dest
        page_dir.mkdir(parents=True, exist_ok=True)
        up = _up(app.path)
        accent_url = assets.add_bytes(f":root {{ --accent: {app.ui.accent}; }}\n".encode(),
                                      "accent", ".css")
        config = app_config(spec, app, models[app.model], runtime_url=up + runtime_url)
        (page_dir / "app.json").write_text(_dump_json(config), "utf-8")
        context = {
            "site": spec.site, "app": app, "config": config, "strings": config["ui"]["strings"],
            "lang": spec.site.language, "up": up, "csp": _csp(models[app.model]),
            "css": [up + css_url, up + accent_url],
            "favicon": up + favicon_url if favicon_url else None,
            "script": up + runtime_url + "runtime/ui/app.js",
            "canonical": spec.site.base_url + (app.path + "/" if app.path else "")
            if spec.site.base_url else None,
            "pwa": _pwa_context(pwa, up, app.ui.accent),
        }
        _render(env, f"{app.ui.layout}.html", context, page_dir / "index.html")
        result.pages.append(display_path(app.path))

    if not any(app.path == "" for app in spec.apps):
        # No app is the front page: list the apps (or send the visitor to the only one).
        strings = resources.ui_strings(spec.apps[0].ui.language)
        context = {
            "site": spec.site, "apps": spec.apps, "strings": strings, "lang": spec.site.language,
            "up": "", "csp": _csp(None), "css": [css_url],
            "favicon": favicon_url, "canonical": spec.site.base_url,
            "redirect": spec.apps[0].path + "/" if len(spec.apps) == 1 else None,
            "pwa": _pwa_context(pwa, "", spec.apps[0].ui.accent),
        }
        _render(env, "index.html", context, dest / "index.html")
        result.pages.insert(0, "/")
    _host_files(spec, env, dest, models, css_url=css_url, favicon_url=favicon_url)
    if pwa is not None:
        exclude = set(_shard_paths(dest, models)) | set(hosts.HOST_FILES) | {offline.SW_FILE}
        (dest / offline.SW_FILE).write_text(
            offline.service_worker(offline.shell_files(dest, exclude=exclude)), "utf-8")
    elif service_worker:
        # site.offline: false. A visitor of an earlier build still has its worker, which would
        # go on serving that build from its cache: this sw.js, found at its next update check,
        # removes it (no page registers it).
        (dest / offline.SW_FILE).write_text(offline.service_worker([], retire=True), "utf-8")
    _check_host_limits(spec, dest, models)
    (dest / MARKER).write_text(_MARKER_TEXT, "utf-8")
    return result


# --- hosts and offline (issue 15) -------------------------------------------------------------

def _offline_assets(spec: Spec, assets: "_Assets", favicon_url: str | None) -> dict:
    """The web app manifest (at the site root) and the registration script (an asset)."""
    icons = []
    fav = spec.site.favicon
    if fav is not None and fav.suffix.lower() == ".svg":
        icons.append({"src": favicon_url, "sizes": "any", "type": "image/svg+xml"})
    elif fav is not None and fav.suffix.lower() == ".png":
        size = offline.png_size(fav)
        if size and size[0] == size[1]:
            icons.append({"src": favicon_url, "sizes": f"{size[0]}x{size[1]}",
                          "type": "image/png"})
    accent = spec.apps[0].ui.accent
    if not icons:  # installable needs a large icon: a generated one stands in for the favicon
        url = assets.add_bytes(offline.default_icon(spec.site.title, accent), "icon", ".svg")
        icons.append({"src": url, "sizes": "any", "type": "image/svg+xml"})
    manifest = offline.web_manifest(name=spec.site.title, description=spec.site.description,
                                    language=spec.site.language, theme_color=accent,
                                    icons=icons)
    (assets.dest / offline.MANIFEST_FILE).write_text(_dump_json(manifest), "utf-8")
    register = assets.add_file(offline.REGISTER_SCRIPT, "offline", ".js")
    return {"manifest": offline.MANIFEST_FILE, "register": register}


def _pwa_context(pwa: dict | None, up: str, accent: str) -> dict | None:
    if pwa is None:
        return None
    return {"manifest": up + pwa["manifest"], "register": up + pwa["register"],
            "theme_color": accent}


def _shard_paths(dest: Path, models: dict) -> list[str]:
    """Site paths of the shard files in ``dest`` (the runtime caches them, not the shell)."""
    paths = []
    for name, model in models.items():
        if model.folder is not None and not model.host_url:
            manifest = read_manifest(dest / "models" / name)
            paths += [f"models/{name}/{s['file']}" for s in manifest["shards"]]
    return paths


def _host_files(spec: Spec, env, dest: Path, models: dict, *, css_url: str,
                favicon_url: str | None) -> None:
    """``404.html`` (absolute URLs from the base path), ``.nojekyll``, ``_headers``."""
    host = hosts.HOSTS[spec.site.host]
    base = hosts.base_path(spec.site.base_url)
    strings = resources.ui_strings(spec.apps[0].ui.language,
                                   _templates_with_theme(spec.site.theme_dir))
    context = {"site": spec.site, "strings": strings, "lang": spec.site.language, "up": base,
               "csp": _csp(None), "css": [base + css_url],
               "favicon": base + favicon_url if favicon_url else None, "canonical": None}
    _render(env, "404.html", context, dest / "404.html")
    if host.nojekyll:
        (dest / ".nojekyll").write_text("", "utf-8")
    if host.headers:
        manifests = [f"models/{n}/manifest.json" for n, m in models.items() if m.folder]
        (dest / "_headers").write_text(hosts.headers_file(
            base, shards=_shard_paths(dest, models), manifests=manifests), "utf-8")


def _check_host_limits(spec: Spec, dest: Path, models: dict) -> None:
    host = hosts.HOSTS[spec.site.host]
    files = [(p, n) for p, n in hosts.site_files(dest) if p != MARKER]
    node = spec.site._value_nodes.get("host")  # absent (or overridden by gh-deploy): no line
    line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None \
        else (None, None)
    local = [n for n, m in models.items() if m.folder is not None and not m.host_url]
    hint = f" (models here: {', '.join(local)})" if local else ""
    hosts.check_limits(host, files, file=str(spec.path) if spec.path else None, line=line,
                       col=col, weights_hint=hint)


# --- app.json ---------------------------------------------------------------------------------

def app_config(spec: Spec, app: App, model: _Model, *, runtime_url: str) -> dict:
    """The per-app configuration the page script reads (documented in docs/spec.md)."""
    up = _up(app.path)
    strings = resources.ui_strings(app.ui.language, _templates_with_theme(spec.site.theme_dir))
    form = app.prompts.form
    form_cfg = None
    if form is not None:
        form_cfg = {
            "fields": [{k: v for k, v in f.to_dict().items()} | {"label": f.label or f.name}
                       for f in form.fields],
            "template": form.template,
            "parts": parse_template(form.template),
            "responses": form.responses,
            "submit": form.submit or strings["submit"],
            "followups": [{"label": f.label, "template": f.template,
                           "parts": parse_template(f.template)} for f in form.followups],
        }
    if model.url is not None:
        manifest, base = model.url + "manifest.json", model.url
    else:
        manifest = f"{up}models/{model.name}/manifest.json"
        base = model.host_url or f"{up}models/{model.name}/"
    ui = app.ui
    return {
        "format": APP_FORMAT,
        "version": APP_FORMAT_VERSION,
        "app": {"id": app.id, "path": display_path(app.path), "title": app.title,
                "description": app.description, "layout": ui.layout},
        "site": {"title": spec.site.title, "language": spec.site.language,
                 "home": up or "./"},
        "prompts": {"system": app.prompts.system, "system_editable": app.prompts.system_editable,
                    "starters": list(app.prompts.starters), "form": form_cfg},
        "generation": app.generation.to_dict(),
        "ui": {"welcome": ui.welcome if ui.welcome is not None else strings["welcome"],
               "placeholder": ui.placeholder if ui.placeholder is not None
               else strings["placeholder"],
               "layout": ui.layout, "theme": ui.theme, "accent": ui.accent,
               "language": ui.language, "strings": strings,
               "settings_bounds": settings_bounds(app)},
        "output": app.output.to_dict() if app.output is not None else None,
        "model": {"name": model.name, "manifest": manifest, "base_url": base,
                  "backend": spec.models[model.name].backend},
        "runtime": {"base": runtime_url + "runtime/", "shaders": runtime_url + "shaders/"},
    }


def settings_bounds(app: App) -> dict:
    """``{name: [min, max]}`` of the settings sliders: SETTINGS_BOUNDS, widened to the spec's
    value so the author's own default is always in range."""
    g = app.generation
    return {name: [min(lo, getattr(g, name)), max(hi, getattr(g, name))]
            for name, (lo, hi) in SETTINGS_BOUNDS.items()}


def _dump_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


# --- models -----------------------------------------------------------------------------------

def _model_key(spec: Spec, name: str) -> tuple:
    """What a resolved model depends on: its options and its local source's identity."""
    m = spec.models[name]
    stamp = None
    if m.source.path is not None:
        st = m.source.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if m.source.kind == "converted":
            st = (m.source.path / "manifest.json").stat()
            stamp += (st.st_mtime_ns, st.st_size)
    return (name, m.source.text, str(spec.spec_dir), stamp, m.quantization, m.embeddings,
            m.shard_size, m.host.base_url, json.dumps(m.chat_template, sort_keys=True))


def _resolve_model(spec: Spec, name: str, cache_dir: Path, progress) -> _Model:
    m = spec.models[name]
    src = m.source
    key = f"models.{name}.source"
    if src.kind == "url":
        return _Model(name, None, src.url, None)
    if src.kind == "converted":
        folder = src.path
    else:
        try:
            from .convert import convert_cached
        except ImportError as e:
            raise BuildError(f"converting a {src.kind} source needs the converter "
                             f"(sitegen.convert), which failed to import: {e}; give an "
                             f"already-converted folder instead", file=str(spec.path),
                             key=key) from None
        try:
            template = _spec_chat_template(spec, name, cache_dir)
            folder = Path(convert_cached(src.text, cache_dir=cache_dir, quant=m.quantization,
                                         embed_quant=m.embeddings, shard_size=m.shard_size,
                                         spec_dir=spec.spec_dir, chat_template=template,
                                         progress=progress))
        except SitegenError as e:
            if e.file is None and e.key is None:
                # Say which model of which spec the converter was working on.
                node = m.node_of("source")
                e.file, e.key = str(spec.path), key
                e.line, e.col = node.start_mark.line + 1, node.start_mark.column + 1
            raise
    _check_converted(folder, str(spec.path), key)
    return _Model(name, folder, None, m.host.base_url)


def _spec_chat_template(spec: Spec, name: str, cache_dir: Path) -> dict | None:
    """The compiled form of ``models.<name>.chat_template`` (None: the model's own template).

    Completed with the model's own BOS/EOS text, so the model is opened (not converted) first;
    `validate` has already compiled a Jinja string with placeholder tokens, so a failure here
    is one the model's tokens cause, reported at the key all the same."""
    m = spec.models[name]
    if m.chat_template is None:
        return None
    from .convert.chat_template import compile_chat_template, validate_segments
    from .convert.sources import resolve

    special = resolve(m.source.text, spec_dir=spec.spec_dir,
                      cache_dir=cache_dir).open().chat_template()[2]
    bos, eos = special.get("bos_token"), special.get("eos_token")
    node = m.node_of("chat_template")
    where = dict(file=str(spec.path), key=f"models.{name}.chat_template",
                 line=node.start_mark.line + 1, col=node.start_mark.column + 1)
    try:
        if isinstance(m.chat_template, str):
            return compile_chat_template(m.chat_template, bos_token=bos, eos_token=eos,
                                         source=where["key"])
        return validate_segments(m.chat_template, bos_token=bos, eos_token=eos,
                                 key=where["key"])
    except SitegenError as e:
        raise BuildError(e.message, **where) from None


def _check_converted(folder: Path, file: str, key: str) -> dict:
    path = folder / "manifest.json"
    try:
        manifest = read_manifest(folder)  # the one reader (docs/manifest.schema.json)
    except ConvertError as e:
        raise BuildError(e.message, file=file, key=key) from None
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise BuildError(f"{path} lists no shards", file=file, key=key)
    for s in shards:
        name = s.get("file") if isinstance(s, dict) else None
        # Shard names become URLs and paths: plain file names only.
        if not isinstance(name, str) or PurePosixPath(name).name != name or name in ("", ".", ".."):
            raise BuildError(f"{path}: shard file name {name!r} is not a plain file name",
                             file=file, key=key)
        if not (folder / name).is_file():
            raise BuildError(f"{path} lists {name}, which is missing from {folder}", file=file,
                             key=key)
    return manifest


def _copy_model(model: _Model, dest: Path, progress) -> None:
    """Copy manifest.json and (unless hosted elsewhere) the shards; hard-link when possible."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(model.folder)
    names = ["manifest.json"]
    if not model.host_url:
        names += [s["file"] for s in manifest["shards"]]
    total = sum((model.folder / n).stat().st_size for n in names)
    done = 0
    for n in names:
        _link_or_copy(model.folder / n, dest / n)
        done += (dest / n).stat().st_size
        if progress:
            progress(f"copy {model.name}", done, total)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # shards are immutable once converted: sharing the inode is safe
    except OSError:
        shutil.copyfile(src, dst)


# --- assets -----------------------------------------------------------------------------------

class _Assets:
    """Files under ``assets/`` with content-hashed names (safe to cache forever)."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.dir = dest / "assets"
        self.dir.mkdir(exist_ok=True)

    def add_bytes(self, data: bytes, stem: str, suffix: str) -> str:
        name = f"{stem}-{hashlib.sha256(data).hexdigest()[:_HASH_LEN]}{suffix.lower()}"
        path = self.dir / name
        if not path.exists():
            path.write_bytes(data)
        return f"assets/{name}"

    def add_file(self, src: Path, stem: str, suffix: str) -> str:
        return self.add_bytes(src.read_bytes(), stem, suffix)

    def copy_runtime(self) -> str:
        """Copy runtime/ and shaders/ under ``assets/runtime-<hash>/``; return that folder's URL.

        The runtime is ES modules that import each other by relative path, so
        renaming each file by its hash would break the imports; one hash of the
        whole tree in the folder name changes every URL whenever any file changes.
        """
        trees = {"runtime": resources.RUNTIME, "shaders": resources.SHADERS}
        files = {name: _tree_files(root) for name, root in trees.items()}
        h = hashlib.sha256()
        for name, rels in files.items():
            for rel in rels:
                data = (trees[name] / rel).read_bytes()
                h.update(f"{name}/{rel}\0{len(data)}\0".encode())
                h.update(data)
        folder = f"runtime-{h.hexdigest()[:_HASH_LEN]}"
        for name, rels in files.items():
            (self.dir / folder / name).mkdir(parents=True, exist_ok=True)
            for rel in rels:
                target = self.dir / folder / name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(trees[name] / rel, target)
        return f"assets/{folder}/"


def _tree_files(root: Path) -> list[str]:
    """Files under ``root`` (POSIX relative paths, sorted), skipping hidden and cache folders."""
    if not root.is_dir():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_NAMES)
        for f in filenames:
            if not f.startswith("."):
                out.append(Path(dirpath, f).relative_to(root).as_posix())
    return sorted(out)


def _static_file(theme_dir: Path | None, name: str) -> Path:
    if theme_dir is not None and (theme_dir / "static" / name).is_file():
        return theme_dir / "static" / name
    return resources.APP_TEMPLATES / "static" / name


def _templates_with_theme(theme_dir: Path | None) -> Path:
    if theme_dir is not None and (theme_dir / "i18n" / "en.json").is_file():
        return theme_dir
    return resources.APP_TEMPLATES


# --- pages ------------------------------------------------------------------------------------

def _jinja_env(theme_dir: Path | None) -> jinja2.Environment:
    search = [str(theme_dir)] if theme_dir is not None else []
    search.append(str(resources.APP_TEMPLATES))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=True,                 # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _render(env: jinja2.Environment, name: str, context: dict, target: Path) -> None:
    try:
        html = env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise BuildError(f"while rendering template {name!r}: {e.message}",
                         file=e.filename or name, line=e.lineno) from None
    except jinja2.TemplateNotFound as e:
        raise BuildError(f"while rendering template {name!r}: template {e.name!r} not found "
                         f"in the theme folder or app_templates/") from None
    except jinja2.TemplateError as e:
        raise BuildError(f"while rendering template {name!r}: {e}") from None
    target.write_text(html, "utf-8")


def _csp(model: _Model | None) -> str:
    """A strict Content-Security-Policy: this origin only, plus the weights' origin if elsewhere."""
    connect = ["'self'"]
    remote = model and (model.url or model.host_url)
    if remote:
        parts = urlsplit(remote)
        connect.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join([
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        f"connect-src {' '.join(connect)}",
        "worker-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
    ])


def _up(path: str) -> str:
    """The relative URL from a page at ``path`` ('' or 'a/b') back to the site root."""
    return "../" * len(path.split("/")) if path else ""


# --- OUT --------------------------------------------------------------------------------------

def _check_out(out: Path, spec: Spec, *, flag: str = "-o") -> None:
    """Refuse an OUT whose replacement would destroy anything but a previous build."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"output {str(out)!r} exists and is not a folder; choose another {flag}")
    spec_dir = spec.spec_dir
    if out == spec_dir or out in spec_dir.parents:
        raise BuildError(f"output {str(out)!r} contains the spec; choose a folder of its own "
                         f"for {flag} (e.g. {str(spec_dir / 'site')!r})")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise BuildError(f"output {str(out)!r} is not empty and was not written by sitegen "
                         f"build (no {MARKER} file); a build replaces OUT whole, so empty or "
                         f"remove it, or choose another {flag}")


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished build ``tmp`` in place of ``out`` (two renames, never a partial OUT)."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
