"""A static HTTP server for the loader's browser tests that can misbehave on purpose.

It serves the repository (so a test page can import ``/runtime/loader/index.js``)
plus folders mounted under a URL prefix (the fixture models), answers ``Range``
requests, sends COOP/COEP (so ``crossOriginIsolated`` holds, as under ``sitegen
serve``), optionally sends CORS headers, logs every request, and injects faults
per path: an HTTP status, a flipped byte, or a connection cut mid-body.

    server = FaultServer(root, mounts={"/models/": tmp}, cors=True).start()
    server.add_fault("/models/tiny/shard-00003.bin", "cut", times=1)
    ... server.log ...; server.stop()
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FaultServer", "Fault", "LogEntry"]

_MIME = {".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html", ".json": "application/json",
         ".wgsl": "text/plain", ".bin": "application/octet-stream", ".css": "text/css", ".wasm": "application/wasm"}


@dataclass
class Fault:
    """``kind``: "status" (answer ``code``), "flip" (flip one byte of the body), "cut" (close the
    connection after ``at`` of the body). ``times``: how many requests it hits; None = all."""
    kind: str
    times: int | None = 1
    code: int = 503
    at: float = 0.5


@dataclass
class LogEntry:
    method: str
    path: str
    range: str | None
    status: int


@dataclass
class _State:
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultServer:
    def __init__(self, root: Path, *, mounts: dict[str, Path] | None = None, cors: bool = False,
                 isolate: bool = True, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root)
        self.mounts = {k: Path(v) for k, v in (mounts or {}).items()}
        self.cors = cors
        self.isolate = isolate
        self.state = _State()
        self.throttle: float | None = None  # bytes per second per response body, for slow-network tests
        handler = _make_handler(self)
        self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_fault(self, path: str, kind: str, **options) -> None:
        with self.state.lock:
            self.state.faults.setdefault(path, []).append(Fault(kind, **options))

    def clear(self) -> None:
        with self.state.lock:
            self.state.faults.clear()
            self.state.log.clear()

    @property
    def log(self) -> list[LogEntry]:
        with self.state.lock:
            return list(self.state.log)

    def requests(self, pattern: str = r"\.bin$") -> list[LogEntry]:
        """Logged GETs whose path matches ``pattern`` (default: shard files)."""
        return [e for e in self.log if e.method == "GET" and re.search(pattern, e.path)]

    def _take_fault(self, path: str) -> Fault | None:
        with self.state.lock:
            for f in self.state.faults.get(path, []):
                if f.times is None or f.times > 0:
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    def _resolve(self, url_path: str) -> Path | None:
        for prefix, folder in self.mounts.items():
            if url_path.startswith(prefix):
                base, rel = folder, url_path[len(prefix):]
                break
        else:
            base, rel = self.root, url_path.lstrip("/")
        p = (base / rel).resolve()
        if base.resolve() not in p.parents and p != base.resolve():
            return None
        return p if p.is_file() else None


def _make_handler(server: FaultServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: the tests read server.log
            pass

        def _common_headers(self) -> None:
            if server.isolate:
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            if server.cors:
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Range")
                self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length")
                self.send_header("Cross-Origin-Resource-Policy", "cross-origin")
            self.send_header("Cache-Control", "no-cache")

        def _log(self, status: int) -> None:
            with server.state.lock:
                server.state.log.append(LogEntry(self.command, self.path.split("?")[0],
                                                 self.headers.get("Range"), status))

        def do_OPTIONS(self):
            self._log(204)
            self.send_response(204)
            self._common_headers()
            self.send_header("Access-Control-Allow-Methods", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _error(self, code: int) -> None:
            self._log(code)
            body = f"{code}\n".encode()
            self.send_response(code)
            self._common_headers()
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            path = self.path.split("?")[0]
            fault = server._take_fault(path) if self.command == "GET" else None
            if fault and fault.kind == "status":
                return self._error(fault.code)
            file = server._resolve(path)
            if file is None:
                return self._error(404)
            data = file.read_bytes()
            status, start, end = 200, 0, len(data)
            rng = self.headers.get("Range")
            if rng:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                if not m or int(m.group(1)) >= len(data):
                    return self._error(416)
                status, start = 206, int(m.group(1))
                end = int(m.group(2)) + 1 if m.group(2) else len(data)
            body = bytearray(data[start:end])
            if fault and fault.kind == "flip" and body:
                body[len(body) // 2] ^= 0x40
            self._log(status)
            self.send_response(status)
            self._common_headers()
            self.send_header("Content-Type", _MIME.get(file.suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault and fault.kind == "cut":
                # Send part of the body, then drop the connection: the browser sees a truncated response.
                self.wfile.write(body[: int(len(body) * fault.at)])
                self.wfile.flush()
                time.sleep(0.3)  # let the browser hand the first half to the page, as on a real network
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            if server.throttle:
                step = 64 * 1024
                for i in range(0, len(body), step):
                    self.wfile.write(body[i:i + step])
                    time.sleep(step / server.throttle)
            else:
                self.wfile.write(body)

    return Handler


if __name__ == "__main__":  # manual use: python tests/fault_server.py [port]
    import sys
    s = FaultServer(Path(__file__).resolve().parents[1], port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
    print(f"serving {s.root} at {s.origin}")
    s.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        s.stop()
