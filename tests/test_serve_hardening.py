"""The preview server against odd requests (issue 11): NUL bytes, internal files, HEAD
against GET, the live-reload script's headers, odd ``Range`` headers, bad and busy ports."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading

import pytest
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from conftest import make_converted_folder
from sitegen.build import MARKER
from sitegen.serve import ISOLATION_HEADERS, _Root, make_app
from test_serve import SPEC, _free_port

PAGE = b"<html><head></head><body>hi</body></html>\n"


def _request(port: int, method: str, path: str, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture
def live_server(tmp_path, caplog):
    """make_app with live reload on, in this process, over a small site."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(PAGE)
    (site / "app.json").write_text("{}\n")
    (site / MARKER).write_text("sitegen\n")
    (site / ".hidden").write_text("x\n")
    (site / "data.bin").write_bytes(bytes(range(100)))
    port = _free_port()
    started = threading.Event()
    state = {}

    def run():
        loop = IOLoop(make_current=False)
        state["loop"] = loop

        async def start():
            server = HTTPServer(make_app(_Root(site), live_reload=True))
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


def test_nul_bytes_answer_404_without_a_traceback(live_server, caplog):
    for path in ["/%00", "/app.json%00", "/%00/x", "/a%00b.html"]:
        status, headers, _ = _request(live_server, "GET", path)
        assert status in (400, 404), path
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Traceback" not in caplog.text and "ValueError" not in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_internal_files_are_not_served(live_server):
    for path in [f"/{MARKER}", "/.hidden", f"/%2e{MARKER[1:]}", f"/x/../{MARKER}"]:
        assert _request(live_server, "GET", path)[0] == 404, path
        assert _request(live_server, "HEAD", path)[0] == 404, path


def test_head_and_get_agree_on_the_injected_page(live_server):
    for path in ["/", "/index.html", "/app.json", "/data.bin"]:
        gs, gh, body = _request(live_server, "GET", path)
        hs, hh, hbody = _request(live_server, "HEAD", path)
        assert gs == hs == 200, path
        assert hbody == b""
        assert gh["Content-Length"] == hh["Content-Length"] == str(len(body)), path
        assert gh["Content-Type"] == hh["Content-Type"], path
    body = _request(live_server, "GET", "/")[2]
    assert body == PAGE.replace(b"</head>", b'<script src="/livereload.js"></script></head>')
    # A range of a page is a range of what GET sends, tag included.
    status, headers, part = _request(live_server, "GET", "/", {"Range": "bytes=12-30"})
    assert status == 206 and part == body[12:31]
    assert headers["Content-Range"] == f"bytes 12-30/{len(body)}"


def test_livereload_js_has_the_site_headers(live_server):
    gs, gh, body = _request(live_server, "GET", "/livereload.js")
    hs, hh, hbody = _request(live_server, "HEAD", "/livereload.js")
    assert gs == hs == 200 and body and hbody == b""
    for h in (gh, hh):
        assert h["Content-Type"] == "text/javascript; charset=utf-8"
        for name, value in ISOLATION_HEADERS.items():
            assert h[name] == value, name
        assert h["Cache-Control"] == "no-store"
    assert gh["Content-Length"] == hh["Content-Length"] == str(len(body))


def test_odd_ranges(live_server):
    data = bytes(range(100))
    # RFC 9110 §14.2: a server MAY ignore the Range header and answer 200 with the whole
    # body; we do so for multiple ranges and for a header we cannot parse.
    for rng in ["bytes=0-1,4-5", "bytes=0-1, 10-", "bytes=abc", "lines=0-5", "bytes=", "bytes=--3"]:
        status, headers, body = _request(live_server, "GET", "/data.bin", {"Range": rng})
        assert (status, body) == (200, data), rng
    status, headers, body = _request(live_server, "GET", "/data.bin", {"Range": "bytes=-10"})
    assert (status, body, headers["Content-Range"]) == (206, data[-10:], "bytes 90-99/100")
    status, headers, body = _request(live_server, "GET", "/data.bin", {"Range": "bytes=95-"})
    assert (status, body, headers["Content-Range"]) == (206, data[95:], "bytes 95-99/100")


@pytest.mark.parametrize("port", ["99999", "0", "-1", "70000"])
def test_a_bad_port_is_an_error_before_anything_is_served(tmp_path, port):
    (tmp_path / "app.yaml").write_text(SPEC)  # no model folder: never reaches the build
    r = subprocess.run([sys.executable, "-m", "sitegen", "serve", "app.yaml", "--port", port],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "--port" in r.stderr
    assert "serving" not in r.stderr.lower() and "Traceback" not in r.stderr


def test_a_busy_port_never_says_serving(tmp_path):
    make_converted_folder(tmp_path / "model")
    (tmp_path / "app.yaml").write_text(SPEC)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "sitegen", "serve", "app.yaml", "--port",
                            str(port)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "serving" not in r.stderr.lower(), r.stderr
    assert r.stderr.splitlines()[-1].startswith("error: --port: cannot listen on")
