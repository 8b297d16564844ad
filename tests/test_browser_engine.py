"""The same engine in headless Chromium gives the same greedy tokens as under Node (issue 4).

A small local server serves runtime/ and shaders/ from the repository and the converted model
under /model/; a page imports runtime/index.js exactly as a built site does and runs greedy
decoding. Chromium is Debian's, driven by pip playwright (never `playwright install`).
"""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from test_engine import PROMPT, js_greedy, models  # noqa: F401  (models is a fixture)
from test_wasm_browser import page_result

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.gpu]

PAGE = """<!doctype html><meta charset="utf-8"><title>engine</title>
<script type="module">
import { createEngine } from "/runtime/index.js";
try {
  const engine = await createEngine({ manifestUrl: "/model/manifest.json", warmup: false });
  const gen = engine.generate({ promptIds: PROMPT_IDS, maxNewTokens: 32, sampling: { temperature: 0 } });
  let r;
  while (!(r = await gen.next()).done) {}
  await engine.unload();
  window.result = { ids: r.value.tokenIds, finish: r.value.finishReason };
} catch (e) {
  window.result = { error: `${e.name}: ${e.message}` };
}
</script>
"""


class _Handler(SimpleHTTPRequestHandler):
    """Repository files, plus /model/ → the converted folder and / → the test page."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".mjs": "text/javascript", ".wgsl": "text/plain", ".json": "application/json"}

    def __init__(self, *args, model_dir: Path, page: str, **kwargs):
        self.model_dir = model_dir
        self.page = page
        super().__init__(*args, directory=str(ROOT), **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path in ("/", "/index.html"):
            body = self.page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def translate_path(self, path):
        if path.startswith("/model/"):
            return str(self.model_dir / path[len("/model/"):].split("?")[0])
        return super().translate_path(path)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def serve():
    servers = []

    def start(model_dir: Path, page: str) -> str:
        handler = functools.partial(_Handler, model_dir=model_dir, page=page)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_browser_greedy_equals_node(models, serve):  # noqa: F811
    from playwright.sync_api import sync_playwright

    folder = models("qwen2", "q4")  # q4 weights and q/k/v biases: the most kernel variants
    prompt = PROMPT[:5]
    node = js_greedy(folder, prompt, 32)
    url = serve(folder, PAGE.replace("PROMPT_IDS", json.dumps(prompt)))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            result, errors = page_result(browser, url, timeout_ms=240_000)
        finally:
            browser.close()
    assert "error" not in result, (result, errors)
    assert result["ids"] == node["token_ids"]
    assert result["finish"] == node["finish_reason"]
