"""The WebAssembly CPU backend in headless Chromium (issue 14, tests).

- Every family on the CPU in a page: the tiny odd-shaped models of the parity tests, loaded with
  `createEngine({backend: "wasm"})` from runtime/index.js as a built site loads it, give all-position
  logits within 1e-4 of the range of transformers' and the same greedy tokens.
- The generated chat app in a Chromium launched without WebGPU: it loads on the CPU, says so in
  the status line, and answers with the greedy tokens the WebGPU backend gives under Node. Served
  by `sitegen serve` (COOP/COEP: cross-origin isolated) it uses the thread pool (2 threads on this
  2-core machine); the same built site from a plain server without those headers runs on one thread.

Chromium is Debian's, driven by pip playwright (never `playwright install`).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from test_app import SPEC, Server
from test_engine import PROMPT, hf_greedy, hf_logits, models, run_cli  # noqa: F401 (models is a fixture)
from test_wasm_engine import FAMILIES, GREEDY, within_range
from tiny_models import make_tiny

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# No --enable-unsafe-webgpu, and the GPU process and WebGPU switched off: a browser without WebGPU.
NO_WEBGPU = ["--no-sandbox", "--disable-gpu", "--disable-features=WebGPU,Vulkan", "--disable-background-networking",
             "--disable-component-update", "--no-first-run"]
STRINGS = json.loads((ROOT / "app_templates" / "i18n" / "en.json").read_text())

pytestmark = pytest.mark.browser


class _Files(SimpleHTTPRequestHandler):
    """Files under `root` with the MIME types a site needs, and no isolation headers."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".json": "application/json", ".wgsl": "text/plain"}

    def __init__(self, *args, mounts: dict[str, Path], page: str | None = None, **kwargs):
        self.mounts = mounts
        self.page = page
        super().__init__(*args, directory=str(mounts["/"]), **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.page is not None and self.path in ("/", "/index.html"):
            body = self.page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def translate_path(self, path):
        for prefix, folder in self.mounts.items():
            if prefix != "/" and path.startswith(prefix):
                return str(folder / path[len(prefix):].split("?")[0])
        return super().translate_path(path)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(mounts: dict[str, Path], page: str | None = None) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Files, mounts=mounts, page=page))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=NO_WEBGPU)
        yield b
        b.close()


def page_result(browser, url: str, *, timeout_ms: int) -> tuple[dict, list[str]]:
    """Open `url` in a new page, wait until its script sets `window.result`; that result, and the
    page's uncaught errors."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url)
        page.wait_for_function("window.result !== undefined", timeout=timeout_ms)
        return page.evaluate("window.result"), errors
    finally:
        page.close()


PAGE = """<!doctype html><meta charset="utf-8"><title>wasm engine</title>
<script type="module">
import { createEngine } from "/runtime/index.js";
const out = { gpu: Boolean(navigator.gpu && await navigator.gpu.requestAdapter().catch(() => null)) };
for (const name of NAMES) {
  try {
    const e = await createEngine({ manifestUrl: `/m/${name}/manifest.json`, backend: "wasm", warmup: false });
    const logits = Array.from(await e.logits(PROMPT));
    const g = e.generate({ promptIds: PROMPT.slice(0, 5), maxNewTokens: GREEDY, sampling: { temperature: 0 } });
    let r; while (!(r = await g.next()).done) {}
    out[name] = { logits, ids: r.value.tokenIds, finish: r.value.finishReason, backend: e.stats.backend };
    await e.unload();
  } catch (err) { out[name] = `${err.name}: ${err.message}`; }
}
window.result = out;
</script>
"""


def test_every_family_in_chromium_matches_transformers(models, browser, serve):  # noqa: F811
    folders = {arch: models(arch) for arch in FAMILIES}
    page_src = (PAGE.replace("NAMES", json.dumps(FAMILIES)).replace("PROMPT", json.dumps(PROMPT))
                .replace("GREEDY", str(GREEDY)))
    url = serve({"/": ROOT, **{f"/m/{a}/": f for a, f in folders.items()}}, page_src)
    result, errors = page_result(browser, url, timeout_ms=300_000)
    assert result["gpu"] is False, "this Chromium should have no WebGPU"
    failures = []
    for arch, folder in folders.items():
        got = result[arch]
        if isinstance(got, str):
            failures.append(f"{arch}: {got}")
            continue
        src = folder.parent / f"{arch}_src"
        problem = within_range(np.array(got["logits"]).reshape(len(PROMPT), -1), hf_logits(src, PROMPT), 1e-4)
        if problem:
            failures.append(f"{arch}: logits {problem}")
        want = hf_greedy(src, PROMPT[:5], GREEDY)
        n = len(got["ids"])
        if got["ids"] != want[:n] or (got["finish"] == "length") != (n == GREEDY):
            failures.append(f"{arch}: greedy {got['ids']} != transformers {want}")
    assert not failures, (failures, errors)


@pytest.fixture(scope="module")
def chat_site(tmp_path_factory):
    """The tiny chat app of tests/test_app.py: its spec, its model, and the built site."""
    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("wasm_app")
    model = convert(make_tiny("llama", root / "src", seed=0), root / "q4", quant="q4")
    spec = root / "app.yaml"
    spec.write_text(SPEC.format(model=model))
    out = root / "site"
    subprocess.run([sys.executable, "-m", "sitegen", "build", str(spec), "-o", str(out), "--cache-dir",
                    str(root / "cache")], check=True, capture_output=True, cwd=ROOT, timeout=600)
    return spec, model, out


def ask(browser, url: str) -> dict:
    """Open the chat app, wait until ready, send one message; what the page shows."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("() => ['ready', 'error'].includes(document.getElementById('status').dataset.state)",
                           timeout=180_000)
    status = page.eval_on_selector("#status", "e => ({ state: e.dataset.state, backend: e.dataset.backend, "
                                              "threads: e.dataset.threads, text: e.textContent.trim() })")
    isolated = page.evaluate("self.crossOriginIsolated")
    assert status["state"] == "ready", (status, errors)
    page.fill("#message", "Hello world")
    page.press("#message", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#messages > li').length === 2"
                           " && !document.querySelector('[data-streaming]') && window.sitegenApp.stream === null",
                           timeout=120_000)
    tokens = page.eval_on_selector("#messages > li:last-child", "e => JSON.parse(e.dataset.tokens)")
    context.close()
    return {"status": status, "isolated": isolated, "tokens": tokens, "errors": errors}


def test_chat_app_without_webgpu_answers_on_the_cpu(chat_site, browser, serve, tmp_path):
    spec, model, site = chat_site
    # The WebGPU backend's greedy reply under Node (SwiftShader): the oracle for the CPU path.
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}]))
    # The app's sampling settings (the spec's temperature 0 and the defaults), as tests/test_app.py's node_reply.
    want = json.loads(run_cli("generate", "--model", model, "--chat", chat, "--temperature", "0", "--top-k", "40",
                              "--top-p", "0.9", "--min-p", "0", "--repetition-penalty", "1.1", "--max-new-tokens",
                              "24", "--json", "--backend", "webgpu").stdout)

    server = Server(spec, tmp_path / "cache")   # sitegen serve: COOP/COEP, so cross-origin isolated
    try:
        threaded = ask(browser, server.url)
    finally:
        server.stop()
    assert threaded["isolated"] is True
    assert threaded["status"]["backend"] == "wasm" and threaded["status"]["threads"] == "2", threaded
    assert threaded["status"]["text"].startswith(STRINGS["ready_cpu_threads"].replace("{threads}", "2"))
    assert threaded["tokens"] == want["token_ids"]

    plain = ask(browser, serve({"/": site}))   # the built site from a server without those headers
    assert plain["isolated"] is False
    assert plain["status"]["backend"] == "wasm" and plain["status"]["threads"] == "1", plain
    assert plain["status"]["text"].startswith(STRINGS["ready_cpu"])
    assert plain["tokens"] == want["token_ids"]
