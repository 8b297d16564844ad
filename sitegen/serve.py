"""``sitegen serve``: a live-reloading preview server built on the ``livereload`` package.

Like mkdocs' server it takes a builder and never serves a half-built site:
every rebuild goes into a fresh folder and the served root switches to it only
once the build has finished. A spec with errors prints them and keeps serving
the last good build. Pages get ``Cross-Origin-Opener-Policy``/``-Embedder-Policy``
(cross-origin isolation, as a production host should send), exact MIME types
(``.wasm``, ``.js``/``.mjs``, ``.json``, ``.wgsl``) and byte ranges (the weight
loader may fetch parts of a shard). Paths that leave the site, paths with a NUL
byte and internal files (``.sitegen-build``, any dot-file) get 404. The live-reload
tag is injected by the handler itself, so ``HEAD``, ``GET`` and ranges agree on
lengths; ``/livereload.js`` gets the same headers as every other response.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import livereload
from livereload import Server
from livereload.handlers import LiveReloadHandler, LiveReloadJSHandler
from livereload.watcher import get_watcher_class
from tornado import web

from . import resources
from .build import MARKER, build_site
from .errors import ServeError, SitegenError
from .spec import SpecErrors, load_spec

__all__ = ["PreviewServer", "make_app", "content_type", "ISOLATION_HEADERS"]

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# Pinned rather than left to the OS's mime.types, which differs between machines
# (and knows nothing of .wgsl); browsers refuse modules and wasm streaming otherwise.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".wgsl": "text/wgsl; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".bin": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}

# The live-reload client, as a same-origin file: the pages' CSP allows no inline script.
_RELOAD_SCRIPT = b'<script src="/livereload.js"></script>'


_ONE_RANGE = re.compile(r"bytes=(\d+-\d*|-\d+)")


def content_type(path: str) -> str:
    """The Content-Type the preview server sends for ``path``."""
    ext = os.path.splitext(path)[1].lower()
    return _TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


class _Root:
    """The folder currently served; swapped whole after each successful build."""

    def __init__(self, path: Path | None = None):
        self.path = path


class _SiteHandler(web.StaticFileHandler):
    """Static files of the current build, with byte ranges (from tornado) and our headers."""

    def initialize(self, root: _Root) -> None:  # type: ignore[override]
        # Read once per request: a swap during a request does not change its folder.
        super().initialize(path=str(root.path), default_filename="index.html")

    def set_default_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Cache-Control", "no-store")  # a preview always shows the latest build

    def get_content_type(self) -> str:
        return content_type(self.absolute_path or "")

    def get(self, path: str, include_body: bool = True):
        # A NUL byte would reach os.stat (ValueError, a 500 with a traceback); dot-files
        # (the build marker) are the builder's, not the site's.
        if "\0" in path or any(part.startswith(".") or part == MARKER
                                for part in path.replace("\\", "/").split("/")):
            raise web.HTTPError(404)
        # One range, well formed, or none: RFC 9110 §14.2 lets a server ignore a Range
        # header and send the whole body (200), which beats tornado's guesses at odd ones.
        rng = self.request.headers.get("Range")
        if rng is not None and not _ONE_RANGE.fullmatch(rng.strip()):
            del self.request.headers["Range"]
        return super().get(path, include_body=include_body)

    # tornado answers 403 for a path outside the root (``..``, decoded ``%2e%2e``, an
    # absolute path); a preview server should not even confirm such a path exists.
    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        with _forbidden_as_404():
            return super().get_absolute_path(root, path)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        with _forbidden_as_404():
            return super().validate_absolute_path(root, absolute_path)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")


@contextlib.contextmanager
def _forbidden_as_404():
    try:
        yield
    except web.HTTPError as e:
        if e.status_code == 403:
            raise web.HTTPError(404) from None
        raise


def _with_reload_tag(data: bytes) -> bytes:
    return data.replace(b"</head>", _RELOAD_SCRIPT + b"</head>", 1)


class _LiveSiteHandler(_SiteHandler):
    """The site with the live-reload tag in every HTML page, counted in every length."""

    @classmethod
    def get_content(cls, abspath, start=None, end=None):
        if not content_type(abspath).startswith("text/html"):
            yield from super().get_content(abspath, start, end)
            return
        with open(abspath, "rb") as f:
            yield _with_reload_tag(f.read())[start:end]

    def get_content_size(self) -> int:
        assert self.absolute_path is not None
        if not content_type(self.absolute_path).startswith("text/html"):
            return super().get_content_size()
        with open(self.absolute_path, "rb") as f:
            return len(_with_reload_tag(f.read()))


class _ReloadJSHandler(LiveReloadJSHandler):
    """livereload's client script, with the site's headers, its MIME type and HEAD."""

    def set_default_headers(self) -> None:
        _SiteHandler.set_default_headers(self)  # type: ignore[arg-type]

    def _body(self) -> bytes:
        return (Path(livereload.__file__).parent / "vendors" / "livereload.js").read_bytes()

    def get(self) -> None:
        self.set_header("Content-Type", content_type("livereload.js"))
        self.write(self._body())

    def head(self) -> None:
        self.set_header("Content-Type", content_type("livereload.js"))
        self.set_header("Content-Length", str(len(self._body())))


def make_app(root: _Root, *, live_reload: bool = True) -> web.Application:
    """The tornado application: livereload's socket and script, then the site."""
    handlers: list = []
    if live_reload:
        handlers += [(r"/livereload", LiveReloadHandler), (r"/livereload.js", _ReloadJSHandler)]
    handlers.append((r"/(.*)", _LiveSiteHandler if live_reload else _SiteHandler, {"root": root}))
    return web.Application(handlers=handlers, debug=False)


class _Watcher(get_watcher_class()):
    def examine(self):
        # livereload queues a "reload every page" at start-up (for pages left open across
        # a restart); that would reload a page that just loaded. Pages reload after builds.
        self._changes.clear()
        return super().examine()


class _Server(Server):
    """livereload's Server with our application in place of its static handler."""

    def __init__(self, root: _Root, on_listening=None):
        super().__init__(watcher=_Watcher())
        self._root = root
        self._on_listening = on_listening

    def _setup_logging(self):
        pass  # livereload would log "Serving on ..." before the socket is bound

    def application(self, port, host, liveport=None, debug=None, live_css=True):
        LiveReloadHandler.watcher = self.watcher
        LiveReloadHandler.live_css = live_css
        try:
            make_app(self._root).listen(port, address=host)
        except OSError as e:
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror} (try another --port)",
                             key="--port") from None
        if self._on_listening is not None:
            self._on_listening()


class PreviewServer:
    """Build ``spec_path`` into a temporary folder, serve it, rebuild on changes."""

    def __init__(self, spec_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
                 strict: bool = False, cache_dir: str | os.PathLike | None = None,
                 out=sys.stderr):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ServeError(f"must be a port number from 1 to 65535, got {port!r}", key="--port")
        self.spec_path = Path(spec_path)
        self.host, self.port, self.strict = host, port, strict
        self.cache_dir = cache_dir
        self.out = out
        self.root = _Root()
        self.builds = 0
        self._previous: Path | None = None
        self._lock = threading.Lock()
        self._workdir: Path | None = None
        self._resolved: dict = {}  # models resolved by earlier builds (see build_site)

    def build(self) -> bool:
        """One build into a fresh folder; on success serve it. Errors are printed, not raised."""
        with self._lock:
            assert self._workdir is not None
            dest = self._workdir / f"build-{self.builds + 1}"
            try:
                spec = load_spec(self.spec_path, strict=self.strict)
                result = build_site(spec, dest, cache_dir=self.cache_dir,
                                    resolved=self._resolved)
            except SitegenError as e:
                shutil.rmtree(dest, ignore_errors=True)
                self._print_error(e)
                if self.root.path is not None:
                    self._say("build failed; still serving the last good build")
                return False
            for p in result.warnings:
                self._say(str(p))
            self.builds += 1
            # Keep the build before the new one until the next swap: requests that
            # started on it may still be reading.
            if self._previous is not None:
                shutil.rmtree(self._previous, ignore_errors=True)
            self._previous, self.root.path = self.root.path, dest
            self._spec = spec
            self._say(f"build {self.builds} ok: {', '.join(result.pages)}")
            return True

    def watched(self) -> list[Path]:
        """What a change to triggers a rebuild: the spec, the theme, templates, runtime, shaders."""
        paths = [self.spec_path.resolve(), resources.APP_TEMPLATES, resources.RUNTIME,
                 resources.SHADERS]
        spec = getattr(self, "_spec", None)
        if spec is not None and spec.site.theme_dir is not None:
            paths.append(spec.site.theme_dir)
        return [p for p in paths if p.exists()]

    def serve(self) -> None:
        """Build, then serve until interrupted (Ctrl-C or SIGTERM)."""
        self._workdir = Path(tempfile.mkdtemp(prefix="sitegen-serve-"))
        previous_term = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            if not self.build():
                raise ServeError("the first build failed; fix the spec and run sitegen serve "
                                 "again", file=str(self.spec_path))
            server = _Server(self.root, on_listening=lambda: self._say(
                f"serving http://{self.host}:{self.port}/ (Ctrl-C to stop)"))
            watching: set[Path] = set()

            def on_change() -> None:
                if self.build():
                    for p in self.watched():
                        if p not in watching:
                            watching.add(p)
                            server.watch(str(p), on_change, delay="forever")
                    LiveReloadHandler.reload_waiters()

            for p in self.watched():
                watching.add(p)
                # delay="forever": livereload never reloads on its own; on_change
                # reloads the pages only after a good build.
                server.watch(str(p), on_change, delay="forever")
            server.serve(port=self.port, host=self.host, restart_delay=0, debug=False)
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _print_error(self, e: SitegenError) -> None:
        if isinstance(e, SpecErrors):
            for p in e.problems:
                self._say(str(p))
            self._say(f"error: {e.file}: {e.message}")
        else:
            self._say(f"error: {e}")

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
