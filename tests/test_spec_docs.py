"""docs/spec.md is generated from the schema; it must be up to date."""

from pathlib import Path

from sitegen.spec.docgen import render
from sitegen.spec.schema import SECTIONS


def test_spec_docs_up_to_date():
    path = Path(__file__).resolve().parent.parent / "docs" / "spec.md"
    assert path.read_text("utf-8") == render(), \
        "docs/spec.md is stale: run `.venv/bin/python -m sitegen.spec.docgen > docs/spec.md`"


def test_every_option_is_documented():
    for cls in SECTIONS:
        assert cls.__doc__, cls.__name__
        for key, opt in cls._options.items():
            # Items of lists/maps are described by their parent option.
            assert opt.doc.strip(), f"{cls.__name__}.{key}"
