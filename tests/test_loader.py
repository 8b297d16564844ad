"""Weight delivery (issue 5) in headless Chromium against a real local server.

The fault-injecting server (tests/fault_server.py) logs every request, so
"a reload makes zero weight requests" is asserted from the server's side.
Fixture models are random weights in the sitegen-weights layout
(tests/weights_fixture.py): the loader needs the layout, not a real model.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from oracles import need

from fault_server import FaultServer
from weights_fixture import grid_tensors, write_model

playwright_sync = need("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
MIB = 2 ** 20
SHARD = MIB


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("loader-models")
    # 42 matrices of 576 KiB + norms: 24 shards of 1 MiB (the ">= 20 shards" memory test).
    write_model(base / "tiny", grid_tensors(42), name="tiny", shard_size=SHARD, seed=1)
    write_model(base / "small", grid_tensors(8), name="small", shard_size=SHARD, seed=2)
    write_model(base / "small-v2", grid_tensors(8), name="small", shard_size=SHARD, seed=3)
    return base


@pytest.fixture(scope="module")
def servers(models):
    main = FaultServer(ROOT, mounts={"/models/": models}).start()
    cors_host = FaultServer(ROOT, mounts={"/models/": models}, cors=True).start()
    bare_host = FaultServer(ROOT, mounts={"/models/": models}, isolate=False).start()
    yield main, cors_host, bare_host
    for s in (main, cors_host, bare_host):
        s.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def ctx(browser, servers):
    for s in servers:
        s.clear()
    context = browser.new_context()
    yield context
    context.close()


def open_page(ctx, server, init_script: str | None = None):
    page = ctx.new_page()
    if init_script:
        page.add_init_script(init_script)
    page.goto(f"{server.origin}/tests/loader_page.html")
    page.wait_for_function("window.pageReady === true")
    return page


def load(page, **opts):
    return page.evaluate("(o) => runLoad(o)", opts)


def shard_gets(server, model: str) -> list[str]:
    return [e.path.rsplit("/", 1)[1] for e in server.requests(rf"^/models/{model}/shard-\d+\.bin$")]


def n_shards(models, name):
    return len(list((models / name).glob("shard-*.bin")))


def test_cold_load_fetches_each_shard_once_and_reload_makes_no_weight_request(ctx, servers, models):
    main = servers[0]
    page = open_page(ctx, main)
    r = load(page, manifestUrl="/models/tiny/manifest.json")
    assert r["ok"], r
    gets = shard_gets(main, "tiny")
    assert sorted(gets) == sorted(p.name for p in (models / "tiny").glob("shard-*.bin"))  # each exactly once
    assert r["result"]["fromNetwork"] == 24 and r["result"]["cache"] == "cache-storage"
    assert {"check", "download", "verify", "upload", "ready"} <= set(r["phases"])
    assert r["last"]["phase"] == "ready" and r["last"]["bytesDone"] == r["last"]["bytesTotal"]

    main.clear()
    page2 = open_page(ctx, main)  # a later visit, same browser profile
    r2 = load(page2, manifestUrl="/models/tiny/manifest.json")
    assert r2["ok"], r2
    assert shard_gets(main, "tiny") == []
    assert r2["result"]["fromCache"] == 24 and r2["sources"] == ["network", "cache"] or "network" not in {
        s for s in r2["sources"] if s != "network"}
    assert r2["last"]["phase"] == "ready"


def test_flipped_byte_is_refetched_and_a_persistently_corrupt_shard_fails_uncached(ctx, servers):
    main = servers[0]
    main.add_fault("/models/small/shard-00002.bin", "flip", times=1)
    page = open_page(ctx, main)
    r = load(page, manifestUrl="/models/small/manifest.json", gpu=False)
    assert r["ok"], r
    assert r["result"]["refetched"] == 1
    assert shard_gets(main, "small").count("shard-00002.bin") == 2
    page.evaluate("deleteCachedModel('small')")

    main.clear()
    main.add_fault("/models/small/shard-00003.bin", "flip", times=None)
    r = load(page, manifestUrl="/models/small/manifest.json", gpu=False, concurrency=1)
    assert not r["ok"]
    assert r["error"]["name"] == "ShardIntegrityError"
    assert re.match(r"Shard 3 \(shard-00003\.bin\) is corrupt: its sha256 is [0-9a-f]{64}, the manifest says "
                    r"[0-9a-f]{64} \(fetched twice from http://127\.0\.0\.1:\d+/models/small/shard-00003\.bin\)\. "
                    r"The file on the server differs", r["error"]["message"])
    cached = page.evaluate("listCachedModels()")
    assert len(cached) == 1 and not cached[0]["complete"]
    keys = page.evaluate("""async () => { const c = await caches.open((await caches.keys()).find(k => k.includes('/small/')));
        return (await c.keys()).map(r => decodeURIComponent(r.url.split('/').pop())); }""")
    assert "shard-00003.bin" not in keys and "shard-00002.bin" in keys


def test_connection_cut_mid_shard_resumes_with_range(ctx, servers):
    main = servers[0]
    main.add_fault("/models/small/shard-00001.bin", "cut", times=1, at=0.5)
    page = open_page(ctx, main)
    r = load(page, manifestUrl="/models/small/manifest.json")
    assert r["ok"], r
    log = [e for e in main.requests(r"shard-00001\.bin$")]
    assert [e.range for e in log][0] is None
    assert len(log) == 2 and log[1].status == 206
    start = int(re.fullmatch(r"bytes=(\d+)-", log[1].range).group(1))
    assert 0 < start <= SHARD // 2
    assert r["result"]["rangeRequests"] == 1 and r["result"]["refetched"] == 0


def test_aborted_load_resumes_fetching_only_missing_shards(ctx, servers, models):
    main = servers[0]
    page = open_page(ctx, main)
    r = load(page, manifestUrl="/models/tiny/manifest.json", concurrency=2, abortAfterShards=10)
    assert not r["ok"] and r["error"]["name"] == "AbortError"
    first = shard_gets(main, "tiny")
    assert 10 <= len(first) < 24
    cached_before = page.evaluate("listCachedModels()")[0]["shardsCached"]
    assert cached_before >= 10
    page.close()
    time.sleep(0.5)  # let the aborted page's last requests reach the log before clearing it
    main.clear()
    page2 = open_page(ctx, main)
    r2 = load(page2, manifestUrl="/models/tiny/manifest.json")
    assert r2["ok"], r2
    second = shard_gets(main, "tiny")
    assert len(second) == 24 - cached_before == r2["result"]["fromNetwork"]
    assert set(first) | set(second) == {p.name for p in (models / "tiny").glob("shard-*.bin")}


def test_503_is_retried_and_404_is_a_clear_error(ctx, servers):
    main = servers[0]
    main.add_fault("/models/small/shard-00004.bin", "status", code=503, times=1)
    page = open_page(ctx, main)
    r = load(page, manifestUrl="/models/small/manifest.json", gpu=False, cache="none")
    assert r["ok"], r
    assert [e.status for e in main.requests(r"shard-00004\.bin$")] == [503, 200]

    main.add_fault("/models/small/shard-00003.bin", "status", code=404, times=None)
    r = load(page, manifestUrl="/models/small/manifest.json", gpu=False, cache="none")
    assert not r["ok"] and r["error"]["name"] == "ShardNotFoundError"
    assert re.fullmatch(r"shard 3 \(shard-00003\.bin\) is missing on the server: http://127\.0\.0\.1:\d+/models/small/"
                        r"shard-00003\.bin answered 404\. Upload every file of the model folder \(manifest\.json and "
                        r"all shard-\*\.bin\) next to each other\.", r["error"]["message"])

    main.clear()
    main.add_fault("/models/small/shard-00002.bin", "status", code=500, times=None)
    r = load(page, manifestUrl="/models/small/manifest.json", gpu=False, cache="none", retries=2)
    assert not r["ok"] and r["error"]["name"] == "NetworkError"
    assert re.match(r"Could not download shard 2 \(shard-00002\.bin\) from http://\S+/shard-00002\.bin after 3 "
                    r"attempts \(last problem: HTTP 500\)\. Check the connection", r["error"]["message"])


def test_cross_origin_host_without_cors_is_reported_as_cors(ctx, servers):
    main, cors_host, bare_host = servers
    # A cross-origin-isolated page (COEP, as `sitegen serve` sends): the host cannot be probed in no-cors
    # mode, so the message names both causes, CORS first.
    page = open_page(ctx, main)
    url = f"{bare_host.origin}/models/small/manifest.json"
    r = load(page, manifestUrl=url, gpu=False, cache="none")
    assert not r["ok"] and r["error"]["name"] == "CorsError", r
    assert r["error"]["message"] == (
        f"The model's weights at {url} are on another origin ({bare_host.origin}) and could not be read. This "
        f"page is cross-origin isolated, so {bare_host.origin} must send CORS headers "
        "('Access-Control-Allow-Origin', 'Access-Control-Allow-Headers: Range') and "
        "'Cross-Origin-Resource-Policy: cross-origin'; if it does, the host is unreachable: check the URL "
        "and the connection.")
    assert r["error"]["data"]["url"] == url
    # A page without isolation: a no-cors probe proves the host answers, so it is certainly CORS.
    page = open_page(ctx, bare_host)
    url = f"{main.origin}/models/small/manifest.json"
    r = load(page, manifestUrl=url, gpu=False, cache="none")
    assert not r["ok"] and r["error"]["name"] == "CorsError", r
    assert r["error"]["message"].startswith(
        f"The model's weights at {url} are on another origin ({main.origin}) that does not allow this page "
        "to read them: its responses lack CORS headers.")
    # The same weights on a host that sends CORS headers load cross-origin (with a Range resume).
    page = open_page(ctx, main)
    cors_host.add_fault("/models/small/shard-00001.bin", "cut", times=1)
    r = load(page, manifestUrl=f"{cors_host.origin}/models/small/manifest.json")
    assert r["ok"], r
    assert r["result"]["rangeRequests"] == 1


def test_too_small_quota_stops_before_any_download(ctx, servers):
    main = servers[0]
    # A 2 MiB quota, as a browser low on disk would report it.
    page = open_page(ctx, main, init_script=(
        "StorageManager.prototype.estimate = async () => ({ quota: 2 * 2 ** 20, usage: 4096 });"))
    r = load(page, manifestUrl="/models/tiny/manifest.json")
    assert not r["ok"] and r["error"]["name"] == "StorageQuotaError", r
    assert re.match(r"Not enough browser storage to keep tiny: it needs 24\.\d MiB more, and this site may use only "
                    r"[\d.]+ (KiB|MiB) more \(quota 2\.0 MiB, used", r["error"]["message"])
    assert "cache: 'none'" in r["error"]["message"]
    assert shard_gets(main, "tiny") == []


def test_refused_storage_runs_without_cache_and_says_so(ctx, servers):
    main = servers[0]
    page = open_page(ctx, main, init_script=(
        "CacheStorage.prototype.open = () => Promise.reject(new DOMException('The operation is insecure.', "
        "'SecurityError'));"))
    r = load(page, manifestUrl="/models/small/manifest.json", gpu=False)
    assert r["ok"], r
    assert r["result"]["cache"] == "none"
    assert r["warnings"][0]["name"] == "StorageUnavailable"
    assert r["warnings"][0]["message"] == ("The browser refused storage (The operation is insecure.); the model will "
                                           "load without a cache and download again on every visit.")


def test_version_bump_evicts_old_entries_and_cache_api_lists_and_deletes(ctx, servers, models):
    main = servers[0]
    page = open_page(ctx, main)
    assert load(page, manifestUrl="/models/small/manifest.json", gpu=False)["ok"]
    listed = page.evaluate("listCachedModels()")
    total = sum(p.stat().st_size for p in (models / "small").glob("shard-*.bin"))
    assert [(m["modelId"], m["bytes"], m["complete"]) for m in listed] == [("small", total, True)]
    old_version = listed[0]["version"]
    r = load(page, manifestUrl="/models/small-v2/manifest.json", gpu=False)  # same model id, new weights
    assert r["ok"], r
    assert r["result"]["fromNetwork"] == n_shards(models, "small-v2")
    assert r["result"]["evicted"] == [f"sitegen-weights-v1/small/{old_version}"]
    listed = page.evaluate("listCachedModels()")
    assert len(listed) == 1 and listed[0]["version"] != old_version
    assert page.evaluate("deleteCachedModel('small')") == 1
    assert page.evaluate("listCachedModels()") == []


def test_opfs_backend_cold_and_warm(ctx, servers):
    main = servers[0]
    page = open_page(ctx, main)
    r = load(page, manifestUrl="/models/small/manifest.json", cache="opfs")
    assert r["ok"] and r["result"]["cache"] == "opfs", r
    main.clear()
    r = load(page, manifestUrl="/models/small/manifest.json", cache="opfs")
    assert r["ok"] and r["result"]["fromNetwork"] == 0 and shard_gets(main, "small") == []
    assert page.evaluate("listCachedModels({cache: 'opfs'})")[0]["complete"]


def _sample_heap(cdp, stop: threading.Event, out: list):
    while not stop.is_set():
        h = cdp.send("Runtime.getHeapUsage")
        out.append(h["usedSize"] + h.get("backingStorageSize", 0))
        time.sleep(0.02)


@pytest.mark.parametrize("cache", ["cache-storage", "none"])
def test_memory_bound_on_24_shards(ctx, servers, cache):
    """Peak JS memory (heap + ArrayBuffer backing stores, sampled over CDP) stays under
    (concurrency + 2) x shard + 64 MiB while 24 shards stream into GPU buffers."""
    main = servers[0]
    main.throttle = 24 * MIB  # bytes/s per response: a ~2 s load, long enough to sample
    page = open_page(ctx, main)
    cdp = ctx.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    base = cdp.send("Runtime.getHeapUsage")
    baseline = base["usedSize"] + base.get("backingStorageSize", 0)
    samples: list[int] = []
    page.evaluate("(o) => startLoad(o)", {"manifestUrl": "/models/tiny/manifest.json", "cache": cache,
                                            "concurrency": 4})
    deadline = time.time() + 120
    while page.evaluate("window.loadState") is None and time.time() < deadline:
        h = cdp.send("Runtime.getHeapUsage")
        samples.append(h["usedSize"] + h.get("backingStorageSize", 0))
        time.sleep(0.01)
    main.throttle = None
    r = page.evaluate("window.loadState")
    assert r and r["ok"], r
    bound = (4 + 2) * SHARD + 64 * MIB
    peak = max(samples) - baseline
    assert len(samples) > 3
    assert peak < bound, f"peak {peak / MIB:.1f} MiB above baseline, bound {bound / MIB:.0f} MiB"
    assert r["result"]["peakBufferedBytes"] <= (4 + 2) * SHARD
