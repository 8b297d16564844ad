"""A static host for the deploy tests (issue 15), behaving like GitHub Pages by default.

It serves one folder under a base path (``/demo-repo/``), answers a folder URL with its
``index.html`` (and a folder URL without its slash with a 301), a missing path with the
site's ``404.html`` and status 404, sends no COOP/COEP unless asked (GitHub Pages cannot),
optionally CORS headers (a weights host), and logs every request with its status. The folder
it serves can be swapped (``serve(folder)``) to deploy a new build.

    host = StaticHost(site, base="/demo-repo/").start(); ...; host.stop()
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StaticHost", "Hit"]

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".json": "application/json",
          ".wgsl": "text/plain; charset=utf-8", ".bin": "application/octet-stream", ".css": "text/css; charset=utf-8",
          ".wasm": "application/wasm", ".svg": "image/svg+xml", ".webmanifest": "application/manifest+json",
          ".c": "text/plain; charset=utf-8"}


@dataclass
class Hit:
    method: str
    path: str
    status: int


class StaticHost:
    def __init__(self, folder: Path, *, base: str = "/", headers: dict | None = None, cors: bool = False):
        assert base.startswith("/") and base.endswith("/")
        self.folder = Path(folder)
        self.base = base
        self.headers = dict(headers or {})
        self.cors = cors
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return self.origin + self.base

    def start(self) -> "StaticHost":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve(self, folder: Path) -> None:
        """Deploy another build: every later request reads ``folder``."""
        with self.lock:
            self.folder = Path(folder)

    def clear(self) -> None:
        with self.lock:
            self.hits.clear()

    def log(self) -> list[Hit]:
        with self.lock:
            return list(self.hits)


def _handler(host: StaticHost):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None):
            with host.lock:
                host.hits.append(Hit(self.command, self.path.split("?")[0], status))
            self.send_response(status)
            for k, v in {**host.headers, **(extra or {})}.items():
                self.send_header(k, v)
            if host.cors:
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Range")
                self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length")
                self.send_header("Cross-Origin-Resource-Policy", "cross-origin")
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=600")  # what GitHub Pages sends
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_OPTIONS(self):
            self._send(204, b"", "text/plain", {"Access-Control-Allow-Methods": "GET, HEAD"} if host.cors else {})

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = self.path.split("?")[0].split("#")[0]
            with host.lock:
                folder = host.folder
            if not path.startswith(host.base) and path + "/" != host.base:
                return self._not_found(folder)
            rel = path[len(host.base):] if path.startswith(host.base) else ""
            target = (folder / rel).resolve()
            if folder.resolve() not in target.parents and target != folder.resolve():
                return self._not_found(folder)
            if target.is_dir():
                if not path.endswith("/"):
                    return self._send(301, b"", "text/plain", {"Location": path + "/"})
                target = target / "index.html"
            if not target.is_file() or any(p.startswith(".") for p in Path(rel).parts):
                return self._not_found(folder)
            data = target.read_bytes()
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
                start = int(rng[6:].split("-")[0])
                if start < len(data):
                    return self._send(206, data[start:], _TYPES.get(target.suffix, "application/octet-stream"),
                                      {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                                       "Accept-Ranges": "bytes"})
            self._send(200, data, _TYPES.get(target.suffix, "application/octet-stream"), {"Accept-Ranges": "bytes"})

        def _not_found(self, folder: Path):
            page = folder / "404.html"
            body = page.read_bytes() if page.is_file() else b"404\n"
            self._send(404, body, "text/html; charset=utf-8")

    return Handler
