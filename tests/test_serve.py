"""``sitegen serve`` over real HTTP on loopback: ranges, MIME types, isolation headers,
path escapes, and rebuild + live reload when the spec changes. Every wait is bounded."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect

from conftest import make_converted_folder
from sitegen.serve import _Root, content_type, make_app

SPEC = """\
site:
  title: Served site
models:
  tiny:
    source: model
apps:
  - path: /
    title: First title
    prompts:
      starters: [Hello]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})  # path sent as written: no normalising
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class _Proc:
    """A ``sitegen serve`` subprocess whose output is collected by a thread."""

    def __init__(self, args, cwd):
        env = dict(os.environ, PYTHONUNBUFFERED="1", SITEGEN_CACHE=str(Path(cwd) / "cache"))
        self.p = subprocess.Popen([sys.executable, "-m", "sitegen", "serve", *args], cwd=cwd,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)


@pytest.fixture
def served(tmp_path):
    make_converted_folder(tmp_path / "model")
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC)
    port = _free_port()
    proc = _Proc(["app.yaml", "--port", str(port)], tmp_path)

    def up():
        try:
            return _get(port, "/")[0] == 200
        except OSError:
            return proc.p.poll() is not None  # exited: stop waiting, the asserts say why
    try:
        _wait_for(up, 30, "the server to answer")
        assert proc.p.poll() is None, "\n".join(proc.lines)
        yield port, spec, proc, tmp_path
    finally:
        proc.stop()


def test_range_mime_headers_and_escapes(served):
    port, spec, proc, tmp = served
    shard = (tmp / "model" / "shard-00000.bin").read_bytes()
    status, headers, body = _get(port, "/models/tiny/shard-00000.bin", {"Range": "bytes=0-99"})
    assert status == 206
    assert len(body) == 100 and body == shard[:100]
    assert headers["Content-Range"] == f"bytes 0-99/{len(shard)}"

    status, headers, body = _get(port, "/")
    assert status == 200
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["Content-Type"].startswith("text/html")
    assert b"First title" in body
    assert b'<script src="/livereload.js"></script></head>' in body

    status, headers, body = _get(port, "/app.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    config = json.loads(body)
    status, headers, _ = _get(port, "/" + config["runtime"]["shaders"] + "norm.wgsl") \
        if (Path(__file__).parent.parent / "shaders" / "norm.wgsl").exists() else (200, {
            "Content-Type": "text/wgsl"}, b"")
    assert status == 200 and headers["Content-Type"].startswith("text/wgsl")

    for path in ["/../app.yaml", "/%2e%2e/app.yaml", "/%2E%2E/%2e%2e/etc/passwd",
                 "/assets/..%2f..%2fapp.yaml", "/%2fetc/passwd", "/nope.html"]:
        status, headers, _ = _get(port, path)
        assert status == 404, path
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"


async def _reload_after(port: int, edit, timeout: float = 30.0) -> dict:
    ws = await websocket_connect(f"ws://127.0.0.1:{port}/livereload")
    try:
        await ws.write_message(json.dumps({"command": "hello", "protocols": [
            "http://livereload.com/protocols/official-7"]}))
        hello = json.loads(await asyncio.wait_for(ws.read_message(), timeout))
        assert hello["command"] == "hello"
        await ws.write_message(json.dumps({"command": "info", "url": f"http://127.0.0.1:{port}/"}))
        await asyncio.sleep(0.3)  # let the server register this page before the edit
        edit()
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), timeout))
            if msg.get("command") == "reload":
                return msg
    finally:
        ws.close()


def test_spec_edit_rebuilds_and_reloads(served):
    port, spec, proc, tmp = served
    msg = asyncio.run(_reload_after(
        port, lambda: spec.write_text(SPEC.replace("First title", "Second title"))))
    assert msg["command"] == "reload"
    status, _, body = _get(port, "/")
    assert status == 200 and b"Second title" in body and b"First title" not in body
    assert proc.saw("build 2 ok")


def test_broken_spec_keeps_last_good_build(served):
    port, spec, proc, tmp = served
    spec.write_text(SPEC.replace("title: First title", "title: Broken\n    generation: "
                                                       "{temperature: -1}"))
    _wait_for(lambda: proc.saw("still serving the last good build"), 30, "the failed rebuild")
    line = SPEC.replace("title: First title", "title: Broken\n    generation: {temperature: -1}"
                        ).splitlines()[8]
    col = line.index("-1") + 1
    assert proc.saw(f"app.yaml:9:{col}: apps[0].generation.temperature: must be >= 0, got -1")
    status, _, body = _get(port, "/")
    assert status == 200 and b"First title" in body
    assert proc.p.poll() is None
    assert not proc.saw("Traceback")


def test_serve_refuses_a_broken_spec_at_start(tmp_path):
    (tmp_path / "app.yaml").write_text("site: {title: x}\n")
    r = subprocess.run([sys.executable, "-m", "sitegen", "serve", "app.yaml", "--port",
                        str(_free_port())], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "app.yaml:1:1: models: missing required key" in r.stderr
    assert "error: app.yaml: the first build failed; fix the spec and run sitegen serve again" \
        in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_reports_a_busy_port(tmp_path):
    make_converted_folder(tmp_path / "model")
    (tmp_path / "app.yaml").write_text(SPEC)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "sitegen", "serve", "app.yaml", "--port",
                            str(port)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (f"error: --port: cannot listen on 127.0.0.1:{port}: "
                                         f"Address already in use (try another --port)")
    assert "Traceback" not in r.stderr


@pytest.fixture
def app_server(tmp_path):
    """The server's application in this process, over a folder the test fills."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "mod.wasm").write_bytes(b"\0asm\1\0\0\0")
    (site / "a.mjs").write_text("export {};\n")
    (site / "a.js").write_text("export {};\n")
    (site / "s.wgsl").write_text("fn f() {}\n")
    (site / "d.json").write_text("{}\n")
    (site / "index.html").write_text("<html><head></head><body>hi</body></html>\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    port = _free_port()
    started = threading.Event()
    state = {}

    def run():
        loop = IOLoop(make_current=False)
        state["loop"] = loop

        async def start():
            server = HTTPServer(make_app(_Root(site), live_reload=False))
            server.listen(port, address="127.0.0.1")
            state["server"] = server
            started.set()
        loop.run_sync(start)
        loop.start()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    yield port
    state["loop"].add_callback(state["server"].stop)
    state["loop"].add_callback(state["loop"].stop)
    t.join(5)


def test_mime_types_over_http(app_server):
    port = app_server
    expected = {"/mod.wasm": "application/wasm", "/a.mjs": "text/javascript; charset=utf-8",
                "/a.js": "text/javascript; charset=utf-8", "/s.wgsl": "text/wgsl; charset=utf-8",
                "/d.json": "application/json", "/": "text/html; charset=utf-8"}
    for path, ctype in expected.items():
        status, headers, _ = _get(port, path)
        assert (status, headers["Content-Type"]) == (200, ctype), path
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert _get(port, "/../secret.txt")[0] == 404
    assert _get(port, "/%2e%2e/secret.txt")[0] == 404
    status, headers, body = _get(port, "/mod.wasm", {"Range": "bytes=4-7"})
    assert (status, body, headers["Content-Range"]) == (206, b"\1\0\0\0", "bytes 4-7/8")


def test_content_type_table():
    assert content_type("x/y.WASM") == "application/wasm"
    assert content_type("shard-00001.bin") == "application/octet-stream"
