"""``models.<name>.chat_template`` (issue 11, "Authoring promises"): a Jinja string or hand-written
segments, checked by ``sitegen validate`` at the key's line and used by ``sitegen build``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from conftest import make_converted_folder
from sitegen.build import build
from sitegen.convert.chat_template import (compile_chat_template, format_conversation,
                                           validate_segments)
from sitegen.errors import BuildError

ROOT = Path(__file__).resolve().parent.parent

# Has a system role, trims contents and opens with the BOS text: enough to tell a template
# compiled with the model's tokens from one compiled with placeholders or none.
JINJA = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] | trim }}"
         "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")

SEGMENTS_YAML = """\
    chat_template:
      start: "<s>"
      roles:
        user: {prefix: "<|user|>\\n", suffix: "</s>\\n", trim: true}
        assistant: {prefix: "<|assistant|>\\n", suffix: "</s>\\n", trim: true}
        system: {prefix: "<|system|>\\n", suffix: "</s>\\n"}
      generation_prompt: "<|assistant|>\\n"
"""

SPEC = """\
site:
  title: Chat
models:
  tiny:
    source: {source}
{template}apps:
  - path: /
    title: Chat
"""

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "  Hello there  "},
            {"role": "assistant", "content": "Hi!\nHow can I help?"},
            {"role": "user", "content": "Tell me a joke."}]


def _jinja_line(template: str) -> str:
    return f"    chat_template: {json.dumps(template)}\n"


def _spec(tmp_path: Path, template: str, *, source: str = "model") -> Path:
    if not (tmp_path / "model").exists():
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
    path = tmp_path / "app.yaml"
    path.write_text(SPEC.format(source=source, template=template))
    return path


def _validate(spec: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sitegen", "validate", str(spec), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def _template_line(spec: Path) -> int:
    return next(i for i, line in enumerate(spec.read_text().splitlines(), 1)
                if "chat_template:" in line)


# --- validate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("template", [_jinja_line(JINJA), SEGMENTS_YAML], ids=["jinja", "segments"])
def test_valid_templates_pass(tmp_path, template):
    r = _validate(_spec(tmp_path, template), "--strict")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout


def test_jinja_syntax_error_is_located(tmp_path):
    spec = _spec(tmp_path, _jinja_line("{% for m in messages %}{{ m.content }{% endfor %}"))
    r = _validate(spec)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    assert f"app.yaml:{_template_line(spec)}:20: models.tiny.chat_template: chat template " \
           f"does not parse: unexpected '}}'" in out


def test_uncompilable_jinja_is_located_with_the_compilers_message(tmp_path):
    # Parses, but changes the content (`upper`): no segments reproduce it.
    template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content | upper }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    spec = _spec(tmp_path, _jinja_line(template))
    r = _validate(spec)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    assert f"app.yaml:{_template_line(spec)}:20: models.tiny.chat_template: cannot compile the " \
           f"chat template faithfully: the template changes the text of a user message" in out


def test_bad_segments_are_located_key_by_key(tmp_path):
    template = """\
    chat_template:
      roles:
        user: {prefix: "<|user|>", suffix: 3, trim: "yes"}
        assistant: {prefix: "<|assistant|>", suffx: "</s>"}
      system_position: turn
      generation_prompt: "<|assistant|>"
"""
    spec = _spec(tmp_path, template)
    r = _validate(spec)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    n = _template_line(spec)
    key = "models.tiny.chat_template"
    assert f"app.yaml:{n + 2}:44: {key}.roles.user.suffix: expected a string, got the number 3" in out
    assert f"app.yaml:{n + 2}:53: {key}.roles.user.trim: expected true or false, got the string " \
           f"'yes'" in out
    assert f"app.yaml:{n + 3}:20: {key}.roles.assistant.suffix: missing required key" in out
    assert f"app.yaml:{n + 3}:46: {key}.roles.assistant.suffx: warning: unknown key 'suffx' " \
           f"(did you mean 'suffix'?)" in out
    assert f"app.yaml:{n + 4}:24: {key}.system_position: needs roles.system" in out


def test_unknown_segment_key_is_fatal_with_strict(tmp_path):
    spec = _spec(tmp_path, SEGMENTS_YAML + "      generation_promt: x\n")
    assert _validate(spec).returncode == 0
    r = _validate(spec, "--strict")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "models.tiny.chat_template.generation_promt: unknown key 'generation_promt' " \
           "(did you mean 'generation_prompt'?)" in out


def test_wrong_type_and_converted_source_are_errors(tmp_path):
    spec = _spec(tmp_path, "    chat_template: [1, 2]\n")
    r = _validate(spec)
    assert r.returncode == 1 and "models.tiny.chat_template: expected a Jinja chat template " \
                                  "(a string) or a mapping of segments" in r.stdout + r.stderr
    make_converted_folder(tmp_path / "converted")
    spec = _spec(tmp_path, _jinja_line(JINJA), source="converted")
    r = _validate(spec)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert f"app.yaml:{_template_line(spec)}:20: models.tiny.chat_template: an already-converted " \
           f"model" in out


# --- build ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bare_model(tmp_path_factory):
    """A tiny Hugging Face folder whose tokenizer has no chat template."""
    from tiny_models import make_tiny

    folder = make_tiny("llama", tmp_path_factory.mktemp("bare") / "model")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template")
    config_path.write_text(json.dumps(config))
    assert not (folder / "chat_template.jinja").exists()
    return folder


def _build(tmp_path: Path, model: Path, template: str) -> dict:
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC.format(source=str(model), template=template))
    build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    return json.loads((tmp_path / "out" / "models" / "tiny" / "manifest.json").read_text())


def test_build_uses_the_spec_jinja_template(tmp_path, bare_model):
    manifest = _build(tmp_path, bare_model, _jinja_line(JINJA))
    # Compiled with the model's own BOS/EOS text (<s>, </s>), not validate's placeholders.
    want = compile_chat_template(JINJA, bos_token="<s>", eos_token="</s>")
    assert manifest["chat_template"] == want
    # The outside oracle: jinja2 itself, configured as transformers configures it.
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    for messages in (MESSAGES, MESSAGES[1:], MESSAGES[:2]):
        expected = env.from_string(JINJA).render(messages=messages, add_generation_prompt=True,
                                                 bos_token="<s>", eos_token="</s>")
        assert format_conversation(manifest["chat_template"], messages) == expected


def test_build_uses_the_spec_segments(tmp_path, bare_model):
    manifest = _build(tmp_path, bare_model, SEGMENTS_YAML)
    given = {"start": "<s>", "generation_prompt": "<|assistant|>\n",
             "roles": {"user": {"prefix": "<|user|>\n", "suffix": "</s>\n", "trim": True},
                       "assistant": {"prefix": "<|assistant|>\n", "suffix": "</s>\n",
                                     "trim": True},
                       "system": {"prefix": "<|system|>\n", "suffix": "</s>\n"}}}
    want = validate_segments(given, bos_token="<s>", eos_token="</s>")
    assert manifest["chat_template"] == want
    assert want["bos"] == "<s>" and want["add_bos"] is True and want["system_position"] == "turn"
    # The same conversation as the Jinja template above: the segments say the same thing.
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    expected = env.from_string(JINJA).render(messages=MESSAGES, add_generation_prompt=True,
                                             bos_token="<s>", eos_token="</s>")
    assert format_conversation(manifest["chat_template"], MESSAGES) == expected


def test_build_without_any_template_has_none(tmp_path, bare_model):
    assert _build(tmp_path, bare_model, "")["chat_template"] is None
