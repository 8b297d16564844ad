"""Opt-in benchmark of weight delivery (issue 5): a >4 GiB model through the loader in headless Chromium.

Writes a random-weight model of Gemma 7B's shape at q4 (about 4.8 GB, 16 MiB shards; codes random, scales
valid f16, sha256s correct) unless it exists, serves it with tests/fault_server.py, and in a persistent
Chromium profile measures:
  * Cache Storage vs OPFS write/read throughput (the default backend's evidence);
  * a cold load (local server -> verify -> cache -> GPU buffers) and a warm load (cache -> GPU),
    each with the peak JS memory (V8 heap + ArrayBuffer backing stores, sampled over CDP every 20 ms)
    and the throughput.
Prints one JSON object. Usage:
  .venv/bin/python bench/load_bench.py [--model gemma7b|tiny] [--out DIR] [--concurrency 4] [--storage-mib 512]
Needs ~5 GB of disk for the shards, ~5 GB more for the browser's cache, and ~6 GB of RAM (SwiftShader keeps
the GPU buffers in memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fault_server import FaultServer  # noqa: E402
from weights_fixture import gemma7b_config, gemma7b_q4_tensors, grid_tensors, write_model  # noqa: E402

ARGS = ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
MIB = 2 ** 20


def ensure_model(out: Path, model: str) -> dict:
    if (out / "manifest.json").exists():
        m = json.loads((out / "manifest.json").read_text())
        if model != "gemma7b" or m.get("config"):
            return m
    t = time.time()
    tensors = gemma7b_q4_tensors() if model == "gemma7b" else grid_tensors(42)
    shard = 16 * MIB if model == "gemma7b" else MIB
    config = gemma7b_config() if model == "gemma7b" else None
    m = write_model(out, tensors, name=f"random-{model}", shard_size=shard, seed=7, config=config)
    print(f"wrote {len(m['shards'])} shards in {time.time() - t:.0f} s", file=sys.stderr)
    return m


def timed_load(page, cdp, opts: dict, start: str = "startLoad") -> dict:
    cdp.send("HeapProfiler.collectGarbage")
    h = cdp.send("Runtime.getHeapUsage")
    baseline = h["usedSize"] + h.get("backingStorageSize", 0)
    peak_heap = peak_backing = peak_sum = 0
    page.evaluate(f"(o) => {start}(o)", opts)
    last_print = time.time()
    while True:
        if time.time() - last_print > 10:
            last_print = time.time()
            e = page.evaluate("window.lastEvent") or {}
            print(f"  {e.get('phase')} {e.get('bytesDone', 0) / MIB:.0f}/{e.get('bytesTotal', 0) / MIB:.0f} MiB "
                  f"shards {e.get('shardsDone')}/{e.get('shardsTotal')} {e.get('source')}", file=sys.stderr)
        state = page.evaluate("window.loadState")
        if state is not None:
            break
        h = cdp.send("Runtime.getHeapUsage")
        peak_heap = max(peak_heap, h["usedSize"])
        peak_backing = max(peak_backing, h.get("backingStorageSize", 0))
        peak_sum = max(peak_sum, h["usedSize"] + h.get("backingStorageSize", 0))
        time.sleep(0.02)
    if not state["ok"]:
        raise SystemExit(f"load failed: {state['error']}")
    res = state["result"]
    if start == "startEngine":
        return {"load_seconds": res["loadMs"] / 1000, "first_token_seconds": res["firstTokenMs"] / 1000,
                "token": res["token"], "vocab": res["vocab"], "logits_finite": res["finite"], "stats": res["stats"],
                "peak_js_MiB_above_baseline": (peak_sum - baseline) / MIB, "peak_v8_heap_MiB": peak_heap / MIB,
                "peak_arraybuffers_MiB": peak_backing / MIB, "baseline_MiB": baseline / MIB}
    return {"seconds": state["ms"] / 1000, "MB_per_s": res["bytes"] / 1e6 / (state["ms"] / 1000),
            "fromNetwork": res["fromNetwork"], "fromCache": res["fromCache"],
            "peak_js_MiB_above_baseline": (peak_sum - baseline) / MIB, "peak_v8_heap_MiB": peak_heap / MIB,
            "peak_arraybuffers_MiB": peak_backing / MIB, "baseline_MiB": baseline / MIB,
            "loader_peak_buffered_MiB": res["peakBufferedBytes"] / MIB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["gemma7b", "tiny"], default="gemma7b")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "sitegen-bench")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--storage-mib", type=int, default=512)
    ap.add_argument("--cache", default="auto")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    model_dir = a.out / a.model
    manifest = ensure_model(model_dir, a.model)
    total = sum(s["bytes"] for s in manifest["shards"])
    server = FaultServer(ROOT, mounts={"/models/": a.out}).start()
    report = {"model": a.model, "bytes": total, "shards": len(manifest["shards"]),
              "shard_size": manifest["shard_size"], "concurrency": a.concurrency,
              "bound_MiB": ((a.concurrency + 2) * manifest["shard_size"] + 64 * MIB) / MIB}
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path="/usr/bin/chromium", headless=True,
                                                   args=ARGS)
        def fresh_page():
            # Each phase is a new visit: a new page, so a new GPU device (the previous page's
            # buffers are gone, as when a visitor comes back).
            for old in ctx.pages:
                old.close()
            page = ctx.new_page()
            page.goto(f"{server.origin}/tests/loader_page.html")
            page.wait_for_function("window.pageReady === true")
            return page, ctx.new_cdp_session(page)

        page, cdp = fresh_page()
        page.evaluate("clearStorage()")
        if a.storage_mib:
            report["storage"] = [page.evaluate("([k, n]) => storageBench(k, n)", [k, a.storage_mib])
                                 for k in ("cache-storage", "opfs")]
        opts = {"manifestUrl": f"/models/{a.model}/manifest.json", "concurrency": a.concurrency, "cache": a.cache}
        print("cold load (local server)", file=sys.stderr)
        report["cold"] = timed_load(page, cdp, opts)
        print(f"  {report['cold']}", file=sys.stderr)
        page, cdp = fresh_page()
        print("warm load (cache)", file=sys.stderr)
        report["warm"] = timed_load(page, cdp, opts)
        print(f"  {report['warm']}", file=sys.stderr)
        report["cached"] = page.evaluate("listCachedModels()")
        if manifest.get("config"):
            page, cdp = fresh_page()
            print("engine: load from cache, compile, one token", file=sys.stderr)
            report["engine"] = timed_load(page, cdp, {"manifestUrl": opts["manifestUrl"], "tokenId": 2},
                                          start="startEngine")
            print(f"  {report['engine']}", file=sys.stderr)
        page.evaluate("clearStorage()")
        ctx.close()
    server.stop()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
