"""Importing a test oracle (transformers, torch, playwright, ...) that may be missing.

Outside CI a missing oracle skips the module with the install hint; in CI (``CI`` set) it is a
failure, so a broken install can never turn every oracle test into a silent skip (issue 11).
"""

from __future__ import annotations

import importlib
import os

import pytest

__all__ = ["need"]


def need(module: str, *, hint: str = "run ./scripts/setup (it installs every test dependency)"):
    """The imported module, or a module-level skip (local) / failure (CI) naming it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        msg = f"test oracle '{module}' is not importable ({e}): {hint}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg, allow_module_level=True)
