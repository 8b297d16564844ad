"""Chat templates without a Jinja engine in the browser (issue 3 item 4).

At build time the model's Jinja chat template is rendered with jinja2 (sandboxed, with the helpers
Hugging Face templates use) on *sentinel* conversations: messages whose contents are unique markers.
Where the markers land tells us the text around each message (per-role prefix and suffix), what comes
before the first turn (BOS), where the system prompt goes, the default system prompt, and the
generation prompt. The result is a small dict (the manifest's ``chat_template``, documented in
docs/weights-format.md#chat-template) that ``runtime/chat.js`` turns into a prompt for any conversation.

The compiled form is then *verified*: many conversations (1-3 turns, with and without a system
prompt, contents with newlines, padding and unicode) are rendered by jinja2 and by
``format_conversation`` (the Python twin of the JS formatter); any difference is a ``ConvertError``
that names the construct that made the template impossible to compile, and tells the author to give
the segments by hand under ``chat_template`` in the spec (checked by ``validate_segments``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Iterator, Mapping

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from sitegen.errors import ConvertError, SpecError

__all__ = ["compile_chat_template", "format_conversation", "render_jinja", "validate_segments",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
_ROLES = ("system", "user", "assistant")
_SYSTEM_POSITIONS = ("turn", "first_user", "last_user")
_HINT = ("give the segments by hand under `chat_template` in the spec "
         "(see docs/weights-format.md#chat-template)")

# Python's str.strip() (what Jinja's `trim` filter and `.strip()` call) removes exactly the characters
# for which str.isspace() is true. runtime/chat.js uses this same list (JS's String.trim differs).
_WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())


# --------------------------------------------------------------------------------------------------
# Rendering with jinja2, as transformers' apply_chat_template does


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Same signature and defaults as transformers' filter (not Jinja's HTML-escaping one).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _parse(template: str, source: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ConvertError(f"chat template does not parse: {e.message}", file=source,
                           line=e.lineno) from None


def _render(tpl: jinja2.Template, messages: list[dict], *, bos_token: str | None,
            eos_token: str | None, add_generation_prompt: bool,
            variables: Mapping[str, Any] | None = None) -> str:
    context: dict[str, Any] = dict(variables or {})
    # Like transformers: special tokens that the tokenizer lacks are left undefined, not None.
    if bos_token is not None:
        context["bos_token"] = bos_token
    if eos_token is not None:
        context["eos_token"] = eos_token
    return tpl.render(messages=[dict(m) for m in messages], tools=None, documents=None,
                      add_generation_prompt=add_generation_prompt, **context)


def render_jinja(template: str, messages: list[dict], *, bos_token: str | None,
                 eos_token: str | None, add_generation_prompt: bool,
                 variables: Mapping[str, Any] | None = None) -> str:
    """Render ``template`` for ``messages`` exactly as transformers' ``apply_chat_template`` does
    (sandboxed jinja2, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, ``strftime_now``,
    ``tojson``, loop controls). ``variables`` are extra template variables (e.g. ``enable_thinking``)."""
    return _render(_parse(template, "<chat template>"), messages, bos_token=bos_token,
                   eos_token=eos_token, add_generation_prompt=add_generation_prompt,
                   variables=variables)


# --------------------------------------------------------------------------------------------------
# The formatter (the Python twin of runtime/chat.js: keep the two in step)


def _check_conversation(c: dict, messages: list[dict]) -> None:
    if not messages:
        raise ValueError("the conversation is empty")
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}].role: expected one of {', '.join(_ROLES)}, "
                             f"got {json.dumps(role)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content: expected a string")
        if role == "system":
            if i != 0:
                raise ValueError(f"messages[{i}]: a system message may only come first")
            if c["roles"].get("system") is None:
                raise ValueError("this model's chat template has no system role")
    offset = 1 if messages[0]["role"] == "system" else 0
    rest = messages[offset:]
    if not rest:
        raise ValueError("the conversation has no user or assistant message")
    if c.get("prefill") is False and rest[-1]["role"] == "assistant":
        raise ValueError("this model's chat template formats a final assistant message (a prefill) "
                         "in a way sitegen does not reproduce: end the conversation with a user "
                         "message")
    if c.get("alternating"):
        for i, m in enumerate(rest):
            want = "user" if i % 2 == 0 else "assistant"
            if m["role"] != want:
                raise ValueError("this model's chat template needs the roles to alternate "
                                 "user/assistant/user/... after the optional system message "
                                 f"(message {i + offset} is {json.dumps(m['role'])})")


def _fold_system(c: dict, messages: list[dict]) -> list[dict]:
    """A template without a system role gets the system prompt prepended to the first user
    message, followed by a blank line (transformers' convention, e.g. Gemma). Twin of chat.js."""
    if (c["roles"].get("system") is not None or not isinstance(messages, list) or not messages
            or not isinstance(messages[0], dict) or messages[0].get("role") != "system"
            or not isinstance(messages[0].get("content"), str)):
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if system == "":
        return rest
    for k, m in enumerate(rest):
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            rest[k] = {**m, "content": system + "\n\n" + m["content"]}
            return rest
    return messages  # _check_conversation says why


def format_conversation(compiled: dict, messages: list[dict], *,
                        add_generation_prompt: bool = True) -> str:
    """Format ``messages`` (``[{"role", "content"}]``) with a compiled chat template.

    Raises ``ValueError`` for a conversation the template does not accept (unknown role, system
    message not first, roles not alternating where the template requires it)."""
    c = compiled
    messages = _fold_system(c, messages)
    _check_conversation(c, messages)
    roles = c["roles"]
    system, rest = None, messages
    if messages[0]["role"] == "system":
        system, rest = messages[0]["content"], messages[1:]
    elif c.get("default_system") is not None:
        system = c["default_system"]
    position = c.get("system_position")
    out = c.get("start", "")
    if system is not None and position == "turn":
        sr = roles["system"]
        out += sr["prefix"] + (_strip(system) if sr.get("trim") else system) + sr["suffix"]
    last = len(rest) - 1
    for i, m in enumerate(rest):
        r = roles[m["role"]]
        content = m["content"]
        prefix = r["prefix"]
        if m["role"] == "assistant" and i == last and r.get("final_prefix") is not None:
            prefix = r["final_prefix"]
        merge = system is not None and m["role"] == "user" and (
            (position == "first_user" and i == 0) or (position == "last_user" and i == last))
        if merge:
            sr = roles["system"]
            block = sr["prefix"] + (_strip(system) if sr.get("trim") else system) + sr["suffix"]
            if r.get("trim") and sr.get("trim_merged"):
                # Llama 2 strips the concatenation (system block + user text), not the user text.
                content = _strip(block + content)
            else:
                content = block + (_strip(content) if r.get("trim") else content)
        elif r.get("trim"):
            content = _strip(content)
        out += prefix + content + r["suffix"]
    out += c["generation_prompt"] if add_generation_prompt else c.get("end", "")
    return out


def _strip(s: str) -> str:
    return s.strip(_WHITESPACE)


# --------------------------------------------------------------------------------------------------
# Validation of a compiled or hand-written form


def validate_segments(data: Any, *, bos_token: str | None = None, eos_token: str | None = None,
                      key: str = "chat_template", file: str | None = None,
                      line: int | None = None) -> dict:
    """Check a hand-written ``chat_template`` (what the spec may give) and return it completed with
    defaults. All problems are reported at once, each by dotted key; raises ``SpecError``."""
    errors: list[str] = []

    def want_str(value: Any, path: str, *, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, got {type(value).__name__}")

    if not isinstance(data, Mapping):
        raise SpecError(f"expected a mapping with `roles` and `generation_prompt`, "
                        f"got {type(data).__name__}", key=key, file=file, line=line)
    known = {"version", "bos", "eos", "add_bos", "start", "end", "roles", "system_position",
             "default_system", "generation_prompt", "alternating", "prefill"}
    for k in data:
        if k not in known:
            errors.append(f"{key}.{k}: unknown key (expected one of {', '.join(sorted(known))})")
    out: dict[str, Any] = {
        "version": FORMAT_VERSION, "bos": data.get("bos", bos_token),
        "eos": data.get("eos", eos_token), "start": data.get("start", ""),
        "end": data.get("end", ""), "roles": {},
        "default_system": data.get("default_system"),
        "generation_prompt": data.get("generation_prompt"),
        "alternating": data.get("alternating", False), "prefill": data.get("prefill", True)}
    if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        errors.append(f"{key}.version: expected {FORMAT_VERSION}, got {data.get('version')!r}")
    for name in ("start", "end"):
        want_str(out[name], f"{key}.{name}")
    for name in ("bos", "eos", "default_system"):
        want_str(out[name], f"{key}.{name}", optional=True)
    if "generation_prompt" not in data:
        errors.append(f"{key}.generation_prompt: missing (the text that opens the assistant's "
                      f"reply, e.g. '<|im_start|>assistant\\n')")
    else:
        want_str(out["generation_prompt"], f"{key}.generation_prompt")
    for name in ("alternating", "prefill"):
        if not isinstance(out[name], bool):
            errors.append(f"{key}.{name}: expected true or false")
    roles = data.get("roles")
    if not isinstance(roles, Mapping):
        errors.append(f"{key}.roles: missing or not a mapping (give `user` and `assistant`, "
                      f"each with `prefix` and `suffix`)")
        roles = {}
    for r in roles:
        if r not in _ROLES:
            errors.append(f"{key}.roles.{r}: unknown role (expected {', '.join(_ROLES)})")
    role_keys = {"prefix", "suffix", "trim", "final_prefix", "trim_merged"}
    for r in _ROLES:
        spec = roles.get(r)
        if spec is None:
            if r != "system":
                errors.append(f"{key}.roles.{r}: missing")
            out["roles"][r] = None
            continue
        if not isinstance(spec, Mapping):
            errors.append(f"{key}.roles.{r}: expected a mapping with `prefix` and `suffix`")
            continue
        for k in spec:
            if k not in role_keys:
                errors.append(f"{key}.roles.{r}.{k}: unknown key "
                              f"(expected one of {', '.join(sorted(role_keys))})")
        entry = {"prefix": spec.get("prefix"), "suffix": spec.get("suffix"),
                 "trim": spec.get("trim", False)}
        for k in ("prefix", "suffix"):
            if k not in spec:
                errors.append(f"{key}.roles.{r}.{k}: missing")
            else:
                want_str(spec[k], f"{key}.roles.{r}.{k}")
        if not isinstance(entry["trim"], bool):
            errors.append(f"{key}.roles.{r}.trim: expected true or false")
        if "final_prefix" in spec:
            want_str(spec["final_prefix"], f"{key}.roles.{r}.final_prefix", optional=True)
            entry["final_prefix"] = spec["final_prefix"]
        if "trim_merged" in spec:
            entry["trim_merged"] = spec["trim_merged"]
        out["roles"][r] = entry
    position = data.get("system_position", "turn" if roles.get("system") is not None else None)
    if roles.get("system") is not None and position not in _SYSTEM_POSITIONS:
        errors.append(f"{key}.system_position: expected one of {', '.join(_SYSTEM_POSITIONS)}, "
                      f"got {position!r}")
    if roles.get("system") is None:
        position = None
        if out["default_system"] is not None:
            errors.append(f"{key}.default_system: needs `roles.system`")
    out["system_position"] = position
    bos = out["bos"]
    out["add_bos"] = data.get("add_bos", bool(bos) and isinstance(out["start"], str)
                              and out["start"].startswith(bos))
    if errors:
        raise SpecError("; ".join(errors), file=file, line=line)
    return out


# --------------------------------------------------------------------------------------------------
# Discovery by sentinel conversations

_S = "SGSYSX0"          # unique markers: no whitespace, nothing a template would transform
_U = ("SGUSRX1", "SGUSRX2", "SGUSRX3")
_A = ("SGASTX1", "SGASTX2", "SGASTX3")
_PAD = " \n\t{}\n "     # padding around a marker, to see whether a role's content is trimmed


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


class _Probe:
    """Renders sentinel conversations and remembers which shapes raise."""

    def __init__(self, tpl: jinja2.Template, bos: str | None, eos: str | None,
                 variables: Mapping[str, Any] | None, source: str):
        self.tpl, self.bos, self.eos, self.variables, self.source = tpl, bos, eos, variables, source

    def render(self, messages: list[dict], gen: bool) -> str:
        return _render(self.tpl, messages, bos_token=self.bos, eos_token=self.eos,
                       add_generation_prompt=gen, variables=self.variables)

    def try_render(self, messages: list[dict], gen: bool) -> str | None:
        try:
            return self.render(messages, gen)
        except Exception:  # noqa: BLE001 - any failure means "this shape is not accepted"
            return None

    def must_render(self, messages: list[dict], gen: bool) -> str:
        try:
            return self.render(messages, gen)
        except jinja2.TemplateError as e:
            raise ConvertError(
                f"cannot compile the chat template: it raises {_exc_text(e)} for a conversation "
                f"shaped {_shape(messages)}; {_HINT}", file=self.source) from None
        except Exception as e:  # noqa: BLE001 - a template bug (bad attribute, type) is reported, not crashed on
            raise ConvertError(
                f"cannot compile the chat template: rendering {_shape(messages)} failed with "
                f"{type(e).__name__}: {e}; {_HINT}", file=self.source) from None


def _exc_text(e: Exception) -> str:
    return f"`{e}`" if str(e) else type(e).__name__


def _shape(messages: list[dict]) -> str:
    return "[" + ", ".join(m["role"] for m in messages) + "]"


def _between(text: str, a: str | None, b: str | None, source: str) -> str:
    """The text between marker ``a`` (or the start) and marker ``b`` (or the end)."""
    i = 0
    if a is not None:
        i = text.find(a)
        if i < 0 or text.find(a, i + 1) >= 0:
            raise _transformed(a, source)
        i += len(a)
    j = len(text)
    if b is not None:
        j = text.find(b, i)
        if j < 0:
            raise _transformed(b, source)
    return text[i:j]


def _transformed(marker: str, source: str) -> ConvertError:
    role = {"SGS": "system", "SGU": "user", "SGA": "assistant"}[marker[:3]]
    return ConvertError(
        f"cannot compile the chat template: it changes or drops the text of a {role} message "
        f"(a filter such as `| upper` or `| replace`, slicing, or a condition on the content); "
        f"{_HINT}", file=source)


def _chains(o: dict[str, str]) -> Iterator[dict[str, str]]:
    """Split the observed boundary texts into start / per-role prefix+suffix / end.

    o['start_u'] = start + P(u)      o['u_a'] = S(u) + P(a)     o['a_u'] = S(a) + P(u)
    o['u_end'] = S(u) + end          o['a_end'] = S(a) + end    o['u_gen'] = S(u) + generation
    Every split of S(u)|P(a) fixes the rest; keep those consistent with all observations."""
    for k in range(len(o["u_a"]), -1, -1):
        su, pa = o["u_a"][:k], o["u_a"][k:]
        if not (o["u_end"].startswith(su) and o["u_gen"].startswith(su)):
            continue
        end, gen = o["u_end"][len(su):], o["u_gen"][len(su):]
        if not o["a_end"].endswith(end):
            continue
        sa = o["a_end"][:len(o["a_end"]) - len(end)]
        if not o["a_u"].startswith(sa):
            continue
        pu = o["a_u"][len(sa):]
        if not o["start_u"].endswith(pu):
            continue
        yield {"start": o["start_u"][:len(o["start_u"]) - len(pu)], "pu": pu, "su": su,
               "pa": pa, "sa": sa, "end": end, "gen": gen}


def _trimmed(p: _Probe, messages: list[dict], marker: str) -> bool:
    """Whether the template strips the whitespace around ``marker``'s message."""
    padded = [_msg(m["role"], _PAD.format(m["content"])) if m["content"] == marker else m
              for m in messages]
    text = p.must_render(padded, False)
    if _PAD.format(marker) in text:
        return False
    if marker in text:
        return True
    raise _transformed(marker, p.source)


def _candidates(p: _Probe) -> Iterator[dict]:
    """Compiled forms consistent with the sentinel renders, most plausible first."""
    u1, u2, a1 = _U[0], _U[1], _A[0]
    alternating = (p.try_render([_msg("user", u1), _msg("user", u2)], True) is None
                   or p.try_render([_msg("user", u1), _msg("assistant", a1),
                                    _msg("assistant", _A[1])], False) is None
                   or p.try_render([_msg("assistant", a1), _msg("user", u1)], True) is None)
    one = p.must_render([_msg("user", u1)], False)
    one_gen = p.must_render([_msg("user", u1)], True)
    three = p.must_render([_msg("user", u1), _msg("assistant", a1), _msg("user", u2)], False)
    two = p.must_render([_msg("user", u1), _msg("assistant", a1)], False)
    # The final assistant message (a prefill) may open differently (Qwen3's empty <think> block):
    # take S(a)+P(u) from a non-final assistant, and S(a)+end from the final one.
    obs = {"start_u": _between(one, None, u1, p.source), "u_end": _between(one, u1, None, p.source),
           "u_gen": _between(one_gen, u1, None, p.source),
           "u_a": _between(three, u1, a1, p.source), "a_u": _between(three, a1, u2, p.source),
           "a_end": _between(two, a1, None, p.source)}
    if not one_gen.startswith(_between(one_gen, None, u1, p.source)):  # pragma: no cover
        return
    u_a_final = _between(two, u1, a1, p.source)
    trim_u = _trimmed(p, [_msg("user", u1)], u1)
    trim_a = _trimmed(p, [_msg("user", u1), _msg("assistant", a1), _msg("user", u2)], a1)

    with_system = p.try_render([_msg("system", _S), _msg("user", u1)], False)
    sys_obs = None
    if with_system is not None and _S in with_system:
        four = p.must_render([_msg("system", _S), _msg("user", u1), _msg("assistant", a1),
                              _msg("user", u2)], False)
        trim_s = _trimmed(p, [_msg("system", _S), _msg("user", u1)], _S)
        sys_obs = {"start_s": _between(with_system, None, _S, p.source),
                   "s_u": _between(with_system, _S, u1, p.source), "four": four, "trim": trim_s}

    # Every consistent split gives the same text; prefer the natural one (the shortest text before
    # the first turn, then the longest suffix) so that the segments read as the template wrote them.
    chains = sorted(_chains(obs), key=lambda ch: (_unbalanced(ch), len(ch["start"]), -len(ch["su"])))
    for ch in chains:
        base = {"version": FORMAT_VERSION, "bos": p.bos, "eos": p.eos, "start": ch["start"],
                "end": ch["end"], "roles": {
                    "user": {"prefix": ch["pu"], "suffix": ch["su"], "trim": trim_u},
                    "assistant": {"prefix": ch["pa"], "suffix": ch["sa"], "trim": trim_a},
                    "system": None},
                "system_position": None, "default_system": None,
                "generation_prompt": ch["gen"], "alternating": alternating, "prefill": True}
        variants = [base]
        if u_a_final != obs["u_a"]:
            # The final assistant message (a prefill) opens differently (Qwen3 writes an empty
            # <think> block there). Try a different prefix for it; failing that, refuse prefills.
            with_final = json.loads(json.dumps(base))
            if u_a_final.startswith(ch["su"]):
                with_final["roles"]["assistant"]["final_prefix"] = u_a_final[len(ch["su"]):]
            base["prefill"] = False
            variants = [with_final, base]
        for v in variants:
            if sys_obs is None:
                yield v
            else:
                yield from _system_candidates(v, ch, sys_obs, obs["start_u"], p.source)


def _unbalanced(ch: dict) -> int:
    """How many segments cut through a bracketed special token such as `<|eot_id|>` or `[INST]`."""
    return sum(1 for k in ("start", "pu", "su", "pa", "sa", "end", "gen")
               if ch[k].count("<") != ch[k].count(">") or ch[k].count("[") != ch[k].count("]"))


def _system_candidates(base: dict, ch: dict, so: dict, start_u: str, source: str) -> Iterator[dict]:
    def variant(position: str, prefix: str, suffix: str, *, start: str | None = None,
                default: str | None = None, trim_merged: bool = False) -> dict:
        c = json.loads(json.dumps(base))
        c["roles"]["system"] = {"prefix": prefix, "suffix": suffix, "trim": so["trim"]}
        if position != "turn":
            c["roles"]["system"]["trim_merged"] = trim_merged
        c["system_position"] = position
        c["default_system"] = default
        if start is not None:
            c["start"] = start
        return c

    start_s, s_u, pu = so["start_s"], so["s_u"], ch["pu"]
    four = so["four"]
    # Own turn: start + P(s) | S | S(s) + P(u)
    if s_u.endswith(pu):
        ss = s_u[:len(s_u) - len(pu)]
        if start_s.startswith(ch["start"]):
            yield variant("turn", start_s[len(ch["start"]):], ss)
        # A default system prompt: without a system message the template still writes a system
        # turn, so what precedes the first user turn is P(s) + default + S(s) + P(u).
        if start_u.startswith(start_s) and start_u.endswith(s_u) and \
                len(start_u) >= len(start_s) + len(s_u):
            default = start_u[len(start_s):len(start_u) - len(s_u)]
            yield variant("turn", start_s, ss, start="", default=default)
    # Merged into the first user message: start + P(u) + sys_prefix | S | sys_suffix | U1
    head = ch["start"] + pu
    if start_s.startswith(head) and four.find(_S) < four.find(_U[0]):
        for tm in (False, True):
            yield variant("first_user", start_s[len(head):], s_u, trim_merged=tm)
    # Merged into the last message when it is a user message (Mistral v3's `loop.last`).
    if four.find(_A[0]) < four.find(_S) < four.find(_U[1]):
        mid = _between(four, _A[0], _S, source)
        tail = ch["sa"] + pu
        if mid.startswith(tail):
            for tm in (False, True):
                yield variant("last_user", mid[len(tail):], _between(four, _S, _U[1], source),
                              trim_merged=tm)


# --------------------------------------------------------------------------------------------------
# Verification against jinja2

_CONTENTS = ("Hello there", "Line one\nLine two\n\nLine four", "  padded both sides  ",
             "unicode: héllo — 日本語 🙂 ﷽", "tabs\tand  double  spaces", "{{ not jinja }} {% raw %}",
             "<b>html</b> & \"quotes\" 'single' \\ backslash", "\nleading newline", "trailing newline\n")


def _conversations(c: dict) -> Iterator[list[dict]]:
    """Conversations to check a compiled form on: 1-3 turns, with and without a system prompt,
    ending on a user or an assistant message; every message of one conversation gets a variant of
    the same content, so each position meets padding, newlines and unicode."""
    shapes = [["user"], ["user", "assistant"], ["user", "assistant", "user"],
              ["user", "assistant", "user", "assistant"],
              ["user", "assistant", "user", "assistant", "user"]]
    if not c.get("alternating"):
        shapes += [["user", "user"], ["assistant", "user"], ["user", "assistant", "assistant", "user"]]
    systems = [False] + ([True] if c["roles"].get("system") is not None else [])
    for content in _CONTENTS:
        for with_system in systems:
            for shape in shapes:
                if c.get("prefill") is False and shape[-1] == "assistant":
                    continue
                roles = (["system"] if with_system else []) + shape
                yield [_msg(r, content.replace("e", "e" * (i + 1), 1)) for i, r in enumerate(roles)]


def _verify(p: _Probe, c: dict) -> str | None:
    """None if ``c`` reproduces jinja2 on every test conversation, else a description of the first
    difference."""
    for msgs in _conversations(c):
        for gen in (True, False):
            try:
                want = p.render(msgs, gen)
            except jinja2.TemplateError as e:
                return (f"it raises {_exc_text(e)} for a conversation shaped {_shape(msgs)} "
                        f"(add_generation_prompt={gen})")
            got = format_conversation(c, msgs, add_generation_prompt=gen)
            if got != want:
                return _diagnose(msgs, gen, want, got)
    return None


def _diagnose(msgs: list[dict], gen: bool, want: str, got: str) -> str:
    i = 0
    while i < min(len(want), len(got)) and want[i] == got[i]:
        i += 1
    where = (f"for {_shape(msgs)} (add_generation_prompt={gen}) jinja2 renders "
             f"{want[max(0, i - 30):i + 30]!r} where the compiled form gives "
             f"{got[max(0, i - 30):i + 30]!r}")
    missing = [m["role"] for m in msgs if m["content"] not in want]
    if missing:
        return (f"the template changes the text of a {missing[0]} message in a way sitegen cannot "
                f"reproduce (only `| trim` / `.strip()` of the whole content is supported); {where}")
    if len(msgs) > 2:
        return ("the template formats a message differently depending on its position in the "
                "conversation (`loop.index`, `loop.first`/`loop.last`, `messages[i]` or a "
                f"`namespace` counter beyond the first turn); {where}")
    return f"the template's output does not follow per-role prefix/suffix segments; {where}"


def compile_chat_template(template: str, *, bos_token: str | None, eos_token: str | None,
                          source: str = "<chat template>",
                          variables: Mapping[str, Any] | None = None) -> dict:
    """Compile a Jinja chat template into the manifest's ``chat_template`` (see
    docs/weights-format.md#chat-template). ``variables`` are extra template variables fixed at
    build time (e.g. ``{"enable_thinking": False}`` for Qwen3's non-thinking mode).

    Raises ``ConvertError`` naming the construct when the template cannot be compiled faithfully."""
    p = _Probe(_parse(template, source), bos_token, eos_token, variables, source)
    first_failure = None
    for n, c in enumerate(_candidates(p)):
        if n >= 12:
            break
        c["add_bos"] = bool(bos_token) and p.must_render([_msg("user", _U[0])], True) \
            .startswith(bos_token)
        failure = _verify(p, c)
        if failure is None:
            return c
        first_failure = first_failure or failure
    if first_failure is None:
        first_failure = ("the text between messages does not split into per-role prefix/suffix "
                         "segments: a role is introduced by different text at different turns (the "
                         "template formats a message differently depending on its position in the "
                         "conversation: `loop.index`, `loop.first`/`loop.last`, `messages[i]` or a "
                         "`namespace` counter)")
    raise ConvertError(f"cannot compile the chat template faithfully: {first_failure}; {_HINT}",
                       file=source)
