"""Deployed sites in headless Chromium (issue 15): a GitHub-Pages-like host (tests/static_host.py:
a base path, 404.html, no COOP/COEP headers), the service worker (offline, isolation, updates)
and weights on a second origin.

Oracles: the Node CLI's greedy reply (tests/test_app.py ``node_reply``) for "the app works", the
built files on disk for "every response is one version's file", the host's request log for
"no 404" and "no request at all while offline".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from static_host import StaticHost
from test_app import node_reply
from tiny_models import make_tiny

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--enable-unsafe-webgpu", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
STRINGS = json.loads((ROOT / "app_templates" / "i18n" / "en.json").read_text())

pytestmark = [pytest.mark.browser, pytest.mark.gpu]

SPEC = """site:
  title: {title}
  host: github-pages
  base_url: {base_url}
models:
  tiny:
    source: {model}
{host}apps:
  - path: /
    title: {title}
    prompts:
      system: Be brief.
    generation:
      temperature: 0
      max_new_tokens: {tokens}
    ui:
      accent: "{accent}"
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("deploy_model")
    return convert(make_tiny("llama", root / "src", seed=0), root / "q4", quant="q4")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def build_site(tmp: Path, name: str, model: Path, base_url: str, *, title="Demo", tokens=16, accent="#2563eb",
               weights_url: str | None = None):
    from sitegen.build import build

    spec = tmp / f"{name}.yaml"
    host = f"    host:\n      base_url: {weights_url}\n" if weights_url else ""
    spec.write_text(SPEC.format(title=title, base_url=base_url, model=model, host=host, tokens=tokens,
                                accent=accent))
    return build(spec, tmp / name, cache_dir=tmp / "cache")


def wait_ready(page, timeout=180_000):
    page.wait_for_function("() => ['ready', 'error'].includes(document.getElementById('status')?.dataset.state)",
                           timeout=timeout)
    state = page.eval_on_selector("#status", "e => e.dataset.state + ': ' + e.textContent.trim()")
    assert state.startswith("ready"), state


def ask(page, text: str, n_messages: int) -> str:
    page.fill("#message", text)
    page.press("#message", "Enter")
    page.wait_for_function(
        f"() => document.querySelectorAll('#messages > li').length === {n_messages}"
        " && !document.querySelector('[data-streaming]') && window.sitegenApp.stream === null", timeout=120_000)
    return page.evaluate(f"window.sitegenApp.conv.messages[{n_messages - 1}].content")


def sw_ready(page) -> None:
    """Until the page's service worker is active (its shell cached)."""
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")


def new_page(context):
    page = context.new_page()
    # Room for a loaded 2-core machine: a page load waits for a model load in another page.
    page.set_default_timeout(120_000)
    page.set_default_navigation_timeout(120_000)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


@pytest.fixture(scope="module")
def reply(model, tmp_path_factory) -> str:
    """What the tiny model answers to "Hello" (the Node runtime, greedy, the spec's settings)."""
    out = node_reply(model, tmp_path_factory.mktemp("oracle"), [{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": "Hello"}], 16)
    return out["text"]


def test_a_project_site_under_its_base_path_loads_everything_and_works(model, browser, tmp_path, reply):
    host = StaticHost(tmp_path / "site", base="/demo-repo/").start()
    try:
        build_site(tmp_path, "site", model, host.url)
        context = browser.new_context()
        page = new_page(context)
        page.goto(host.url)
        wait_ready(page)
        assert ask(page, "Hello", 2) == reply
        hits = host.log()
        assert hits and not [h for h in hits if h.status >= 400], [h for h in hits if h.status >= 400]
        assert {h.path for h in hits} >= {"/demo-repo/", "/demo-repo/app.json", "/demo-repo/sw.js",
                                          "/demo-repo/models/tiny/manifest.json", "/demo-repo/manifest.webmanifest"}
        assert any(h.path.startswith("/demo-repo/models/tiny/shard-") for h in hits)
        # The web app manifest: the site's name, and an icon that loads (installable).
        manifest = page.evaluate("""async () => { const href = document.querySelector('link[rel=manifest]').href;
            const m = await (await fetch(href)).json();
            const icon = await fetch(new URL(m.icons[0].src, href));
            return { name: m.name, start: new URL(m.start_url, href).href, icon: icon.status,
                     type: icon.headers.get('content-type') }; }""")
        assert manifest == {"name": "Demo", "start": host.url, "icon": 200, "type": "image/svg+xml"}
        # A missing page gets the site's 404 page, whose stylesheet loads from the base path.
        host.clear()
        response = page.goto(host.url + "no/such/page")
        assert response.status == 404
        assert page.inner_text("h1") == STRINGS["not_found_title"]
        # (served by the service worker from its cache by now, or by the host)
        assert page.evaluate("[...document.styleSheets].map((s) => [new URL(s.href).pathname, s.cssRules.length > 0])"
                             ) == [[p, True] for p in ["/demo-repo/assets/" + css.name for css in
                                                       (tmp_path / "site" / "assets").glob("sitegen-*.css")]]
        assert not [h for h in host.log() if h.path.endswith(".css") and h.status != 200]
        page.click("text=" + STRINGS["not_found_home"])
        page.wait_for_url(host.url)
        assert not page.errors, page.errors
        context.close()
    finally:
        host.stop()


def test_service_worker_isolates_the_page_and_the_app_answers_offline(model, browser, tmp_path, reply):
    host = StaticHost(tmp_path / "site", base="/demo-repo/").start()
    try:
        build_site(tmp_path, "site", model, host.url)
        context = browser.new_context()
        page = new_page(context)
        page.goto(host.url)
        # The host sends no COOP/COEP: the first load is not isolated...
        assert page.evaluate("crossOriginIsolated") is False
        wait_ready(page)  # the model is now in the loader's cache
        sw_ready(page)
        # ...the next one, served by the service worker with COOP/COEP added, is.
        page.reload()
        assert page.evaluate("navigator.serviceWorker.controller !== null")
        assert page.evaluate("crossOriginIsolated") is True
        wait_ready(page)
        # Offline: a reload and a reply with no request reaching the host.
        host.clear()
        context.set_offline(True)
        page.reload()
        wait_ready(page)
        assert page.evaluate("crossOriginIsolated") is True
        assert ask(page, "Hello", 2) == reply
        # The browser's own update check of sw.js is outside the page's network emulation.
        assert [h.path for h in host.log() if h.path != "/demo-repo/sw.js"] == []
        assert not page.errors, page.errors
        context.close()
    finally:
        host.stop()


def test_weights_on_a_second_origin_load_with_cors_and_fail_clearly_without(model, browser, tmp_path, reply):
    cors = StaticHost(tmp_path / "site-weights", base="/w/", cors=True).start()
    bare = StaticHost(tmp_path / "bare-weights", base="/w/").start()
    site = StaticHost(tmp_path / "site", base="/").start()
    try:
        result = build_site(tmp_path, "site", model, site.url, weights_url=cors.url + "tiny/")
        assert result.uploads == [("tiny", tmp_path / "site-weights" / "tiny", cors.url + "tiny/")]
        assert sorted(p.name for p in (tmp_path / "site" / "models" / "tiny").iterdir()) == ["manifest.json"]
        context = browser.new_context()
        page = new_page(context)
        page.goto(site.url)
        wait_ready(page)
        assert ask(page, "Hello", 2) == reply
        shards = sorted(h.path for h in cors.log() if h.method == "GET" and "/shard-" in h.path)
        want = sorted(f"/w/tiny/{p.name}" for p in (tmp_path / "site-weights" / "tiny").glob("shard-*.bin"))
        assert shards == want
        assert not [h for h in site.log() if "/shard-" in h.path]
        assert not page.errors, page.errors
        context.close()

        # The same site with its weights on a host that sends no CORS headers.
        build_site(tmp_path, "bare", model, site.url, weights_url=bare.url + "tiny/")
        site.serve(tmp_path / "bare")
        context = browser.new_context()
        page = new_page(context)
        page.goto(site.url)
        page.wait_for_function("() => document.getElementById('status').dataset.state === 'error'", timeout=120_000)
        assert page.get_attribute("#status", "data-error") == "CorsError"
        assert page.inner_text("#status-text") == STRINGS["err_CorsError"]
        assert bare.url + "tiny/shard-00000.bin" in page.text_content("#status details")
        context.close()
    finally:
        for h in (cors, bare, site):
            h.stop()


def _file_for(url: str, base: str, folder: Path) -> Path | None:
    if not url.startswith(base):
        return None
    rel = url[len(base):].split("?")[0].split("#")[0]
    path = folder / rel
    return path / "index.html" if rel == "" or rel.endswith("/") else path


def _versions(responses, base: str, builds: dict[str, Path]) -> list[tuple[str, set]]:
    """For each response of the site: which builds have exactly its body at its path."""
    out = []
    for url, body in responses:
        names = set()
        for name, folder in builds.items():
            path = _file_for(url, base, folder)
            if path is not None and path.is_file() and \
                    hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(body).digest():
                names.add(name)
        out.append((url, names))
    return out


def record(page) -> list:
    seen: list = []

    def on_response(r):
        # (not the service worker's empty "Refresh: 0" answer that hands a load over to the new version)
        if r.request.method == "GET" and r.status == 200 and "refresh" not in r.headers:
            try:
                seen.append((r.url, r.body()))
            except Exception:  # noqa: BLE001 - a body the page dropped (a redirect, a navigation)
                pass
    page.on("response", on_response)
    return seen


def test_an_update_replaces_the_shell_after_reload_without_mixing_or_breaking_a_conversation(
        model, browser, tmp_path):
    host = StaticHost(tmp_path / "v1", base="/demo-repo/").start()
    try:
        build_site(tmp_path, "v1", model, host.url, title="Version one", tokens=100, accent="#b91c1c")
        build_site(tmp_path, "v2", model, host.url, title="Version two", tokens=100, accent="#047857")
        builds = {"v1": tmp_path / "v1", "v2": tmp_path / "v2"}
        context = browser.new_context()
        page = new_page(context)
        page.goto(host.url)
        wait_ready(page)
        sw_ready(page)
        page.reload()  # now served by version one's service worker
        wait_ready(page)

        # Version two is deployed; the open page finds it, installs it, and keeps working on version one.
        host.serve(tmp_path / "v2")
        page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r.update())")
        page.wait_for_function("() => document.documentElement.dataset.sitegenUpdate === 'ready'", timeout=60_000)
        assert page.title() == "Version one"
        ask(page, "Hello", 2)

        # While this page generates, a new page of the site still gets version one, all of it.
        page.click("#new-chat")  # (the tiny model's context holds 256 tokens)
        page.fill("#message", "Go on and on")
        page.press("#message", "Enter")
        page.wait_for_function("() => (window.sitegenApp.conv.messages[1]?.tokens?.length ?? 0) >= 1")
        other = new_page(context)
        seen = record(other)
        other.goto(host.url)
        assert other.title() == "Version one"
        wait_ready(other)
        for url, names in _versions(seen, host.url, builds):
            if url.startswith(host.url):
                assert "v1" in names, (url, names)
        other.close()
        page.wait_for_function("() => window.sitegenApp.stream === null && !document.querySelector('[data-streaming]')",
                               timeout=120_000)
        assert len(page.evaluate("window.sitegenApp.conv.messages[1].tokens")) > 1  # the reply ran to its end
        assert not page.errors, page.errors

        # Nothing generating: a reload brings version two, every file of it, and the old shell is gone.
        seen = record(page)
        page.reload()
        page.wait_for_function("() => document.title === 'Version two'", timeout=120_000)
        wait_ready(page)
        checked = [(url, names) for url, names in _versions(seen, host.url, builds) if url.startswith(host.url)]
        assert any(url.endswith(".css") and "accent" in url for url, _ in checked)
        for url, names in checked:
            assert "v2" in names, (url, names)
        shells = page.evaluate("caches.keys().then((k) => k.filter((n) => n.startsWith('sitegen-shell-')))")
        assert len(shells) == 1, shells
        # The conversation of version one is still there (the page's store), and the app answers.
        assert page.evaluate("window.sitegenApp.conv.messages.map((m) => m.content)")[0] == "Go on and on"
        page.click("#new-chat")
        ask(page, "Hello again", 2)
        assert not page.errors, page.errors
        context.close()
    finally:
        host.stop()


def test_a_build_with_offline_false_retires_the_service_worker_and_its_shell(model, browser, tmp_path):
    host = StaticHost(tmp_path / "v1", base="/demo-repo/").start()
    try:
        build_site(tmp_path, "v1", model, host.url, title="Version one")
        build_site(tmp_path, "v3", model, host.url, title="No worker")
        spec = tmp_path / "v3.yaml"
        spec.write_text(spec.read_text().replace("  host: github-pages\n", "  host: github-pages\n  offline: false\n"))
        from sitegen.build import build
        build(spec, tmp_path / "v3", cache_dir=tmp_path / "cache")
        context = browser.new_context()
        page = new_page(context)
        page.goto(host.url)
        sw_ready(page)
        page.reload()
        assert page.evaluate("navigator.serviceWorker.controller !== null") and page.title() == "Version one"
        wait_ready(page)  # (a reload while the worker compiles the model on SwiftShader can stall)
        host.serve(tmp_path / "v3")
        page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r.update())")
        page.wait_for_function("caches.keys().then((k) => !k.some((n) => n.startsWith('sitegen-shell-')))",
                               timeout=60_000)
        host.clear()
        page.reload()
        assert page.title() == "No worker"
        # The page came from the host: the retired worker (if it still controls the page) has no
        # fetch handler. (Its other files may come from the HTTP cache, as on any host.)
        assert "/demo-repo/" in {h.path for h in host.log()}
        assert page.evaluate("navigator.serviceWorker.getRegistration().then((r) => r?.active?.scriptURL ?? null)"
                             ) in (None, host.url + "sw.js")
        assert page.evaluate("caches.keys().then((k) => k.filter((n) => n.startsWith('sitegen-shell-')))") == []
        context.close()
    finally:
        host.stop()
