"""Where sitegen's own files live: ``app_templates/``, ``runtime/`` and ``shaders/``.

They sit at the top of the source tree, next to the ``sitegen`` package (an
editable install, as the README's commands make, uses them in place).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

__all__ = ["ROOT", "APP_TEMPLATES", "RUNTIME", "SHADERS", "ui_languages", "ui_strings"]

ROOT = Path(__file__).resolve().parent.parent
APP_TEMPLATES = ROOT / "app_templates"
RUNTIME = ROOT / "runtime"
SHADERS = ROOT / "shaders"


@cache
def ui_languages() -> tuple[str, ...]:
    """UI languages with a strings file in ``app_templates/i18n/`` (English first)."""
    names = sorted(p.stem for p in (APP_TEMPLATES / "i18n").glob("*.json"))
    return tuple(sorted(names, key=lambda n: (n != "en", n)))


def ui_strings(language: str, templates: Path = APP_TEMPLATES) -> dict[str, str]:
    """The UI strings of ``language``, English filling any gap."""
    base = json.loads((templates / "i18n" / "en.json").read_text("utf-8"))
    path = templates / "i18n" / f"{language}.json"
    if language != "en" and path.is_file():
        base.update(json.loads(path.read_text("utf-8")))
    return base
