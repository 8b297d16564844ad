"""The project's documentation site (issue 16): it builds with ``mkdocs build --strict``, its
spec reference lists every key of the schema, and the troubleshooting and JS API pages agree
with the code they describe."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from sitegen.spec.options import ListOf, MapOf, Sub
from sitegen.spec.schema import Spec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("project_docs") / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from walk(value)
            else:
                yield value
    return list(walk(config["nav"]))


def test_project_docs_build_strict(site):
    for page in nav_pages():
        built = site / (page[:-3] + "/index.html" if page != "index.md" else "index.html")
        assert built.is_file(), page


def test_every_page_is_in_the_nav():
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    missing = sorted(pages - set(nav_pages()))
    assert not missing, f"add these pages to the nav of mkdocs.yml: {missing}"


def test_readme_links_the_docs_and_says_how_to_build_them():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/index.md)" in readme and "(docs/getting-started.md)" in readme
    assert "mkdocs build --strict" in readme and "mkdocs serve" in readme


def test_getting_started_starts_with_the_readmes_two_commands():
    readme = (ROOT / "README.md").read_text()
    guide = (DOCS / "getting-started.md").read_text()
    commands = re.findall(r"```sh\n(.*?)```", readme.split("## Use")[0], re.S)
    assert len(commands) == 2
    for block in commands:
        assert block in guide, block
    # ... then a first app: every `sitegen` verb it uses is a real command.
    from sitegen.cli import COMMANDS

    verbs = set(re.findall(r"^\s*sitegen (\w+)", guide.split("## A first app")[1], re.M))
    assert {"new", "validate", "serve", "build"} <= verbs <= set(COMMANDS), verbs


# --- the spec reference lists every key of the schema ---------------------------------------

def schema_keys(section=Spec, prefix="") -> set[str]:
    """Every key path of the schema (``apps[].ui.accent``, ``models.*.host.base_url``)."""
    keys = set()
    for name, opt in section._options.items():
        path = f"{prefix}{name}"
        keys.add(path)
        inner, suffix = opt, ""
        while isinstance(inner, (ListOf, MapOf)):
            suffix += "[]" if isinstance(inner, ListOf) else ".*"
            inner = inner.item
        if isinstance(inner, Sub):
            keys |= schema_keys(inner.section, f"{path}{suffix}.")
        elif getattr(inner, "type_doc", "").find("[ChatSegments]") >= 0:
            from sitegen.spec.schema import ChatSegments
            keys |= schema_keys(ChatSegments, f"{path}.")
    return keys


class _Tables(HTMLParser):
    """Per heading id: the rows (cells as text, links as their targets) of the table after it."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, list[list[tuple[str, list[str]]]]] = {}
        self._id = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h2", "h3", "h4") and attrs.get("id"):
            self._id = attrs["id"]
            self.sections.setdefault(self._id, [])
        elif tag == "tr" and self._id:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ["", []]
        elif tag == "a" and self._cell is not None and attrs.get("href", "").startswith("#"):
            self._cell[1].append(attrs["href"][1:])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "tr" and self._row:
            self.sections[self._id].append(self._row)
            self._row = None


def documented_keys(page: str) -> set[str]:
    """Every key path the built spec page documents, by following the type column's links."""
    parser = _Tables()
    parser.feed(page)
    keys: set[str] = set()

    def walk(anchor: str, prefix: str, seen: tuple):
        assert anchor in parser.sections, f"no section #{anchor} in the spec page"
        for cells in parser.sections[anchor]:
            key, (type_text, links) = cells[0][0], cells[1]
            path = prefix + key
            keys.add(path)
            suffix = ("[]" if type_text.startswith("list of") else
                      ".*" if type_text.startswith("mapping of") else "")
            for target in links:
                if target not in seen:
                    walk(target, f"{path}{suffix}.", seen + (target,))

    walk("spec", "", ("spec",))
    return keys


def test_spec_reference_lists_every_key_of_the_schema(site):
    page = (site / "spec" / "index.html").read_text()
    documented = documented_keys(page)
    schema = schema_keys()
    assert len(schema) > 50
    assert documented == schema, {"undocumented": sorted(schema - documented),
                                  "not in the schema": sorted(documented - schema)}


# --- troubleshooting: every quoted message is one the code gives -----------------------------

def _source_text() -> str:
    """sitegen's and the runtime's sources and UI strings, adjacent string literals joined."""
    parts = []
    for pattern in ("sitegen/**/*.py", "runtime/**/*.js", "runtime/**/*.mjs", "app_templates/i18n/*.json"):
        for path in sorted(ROOT.glob(pattern)):
            if "node_modules" not in path.parts:
                parts.append(path.read_text("utf-8"))
    text = "\n".join(parts)
    # "a " "b" / f"a " f"b" (Python) and "a " + "b" / `a ` + `b` (JS), across lines.
    text = re.sub(r"""(["'`])\s*\+?\s*\n\s*\+?\s*[frbFRB]{0,2}(["'`])""", "", text)
    return text.replace("\\'", "'").replace('\\"', '"')


def troubleshooting_messages() -> list[str]:
    """The quoted messages: backticked spans of the definition terms of docs/troubleshooting.md."""
    lines = (DOCS / "troubleshooting.md").read_text().splitlines()
    terms = [line for line, after in zip(lines, lines[1:] + [""]) if after.startswith(":   ") and line.strip()]
    return [m for term in terms for m in re.findall(r"`([^`]+)`", term)]


def test_troubleshooting_quotes_the_codes_messages():
    source = _source_text()
    messages = troubleshooting_messages()
    assert len(messages) >= 30
    missing = []
    for message in messages:
        for fragment in re.split(r"…|\*[^*]+\*", html.unescape(message)):
            fragment = fragment.strip(" .,:;()'\"")
            if len(fragment) >= 4 and fragment not in source:
                missing.append((message, fragment))
    assert not missing, missing


def test_every_runtime_error_class_has_troubleshooting():
    """Each user-facing runtime error class is named on the page, so a developer who catches one
    by name finds what to do."""
    page = (DOCS / "troubleshooting.md").read_text()
    classes = set()
    for path in list((ROOT / "runtime").glob("*.js")) + list((ROOT / "runtime" / "loader").glob("*.js")):
        classes |= set(re.findall(r"export class (\w+Error) extends", path.read_text()))
    assert {"WebGPUUnavailableError", "ShardIntegrityError", "CorsError"} <= classes
    missing = sorted(c for c in classes - {"SitegenRuntimeError"} if c not in page)
    assert not missing, missing


# --- the JS API page against runtime/index.js and createEngine's options ----------------------

def test_js_api_documents_the_public_exports_and_engine_options():
    page = (DOCS / "js-api.md").read_text()
    index = (ROOT / "runtime" / "index.js").read_text()
    exports = set()
    for block in re.findall(r"export\s*\{(.*?)\}\s*from", index, re.S):
        exports |= {name.strip().split(" as ")[-1] for name in block.split(",") if name.strip()}
    loader = (ROOT / "runtime" / "loader" / "index.js").read_text()
    exports |= {"listCachedModels", "deleteCachedModel", "createLoader"} & set(re.findall(r"\b(\w+)\b", loader))
    missing = sorted(name for name in exports if f"`{name}" not in page)
    assert not missing, f"docs/js-api.md does not mention: {missing}"
    engine = (ROOT / "runtime" / "engine.js").read_text()
    options = re.search(r"@typedef \{object\} EngineOptions(.*?)\*/", engine, re.S).group(1)
    names = re.findall(r"@property \{[^}]*\} \[?(\w+)", options)
    assert "manifestUrl" in names and "onProgress" in names
    table = page.split("## `createEngine(options)`")[1].split("\n## ")[0]
    missing = sorted(n for n in names if f"| `{n}` |" not in table)
    assert not missing, f"createEngine options missing from docs/js-api.md: {missing}"
    events = re.search(r'phase: ("check".*?)\}', engine, re.S).group(1)
    for phase in re.findall(r'"(\w+)"', events.split(",")[0]):
        assert f'"{phase}"' in page, phase
