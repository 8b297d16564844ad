"""The committed Wasm kernels are what `scripts/build-wasm` makes from their source (issue 14).

The built .wasm files ship in the Python package (runtime/ is copied into every site) so that an
author never needs a compiler; this test rebuilds them with Debian's clang + lld and fails if
either differs from the committed one (the build is reproducible: no paths, dates or debug info).
Locally a machine without clang skips it; in CI (``CI`` set) a missing clang is a failure, since
scripts/setup installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WASM = ROOT / "runtime" / "backends" / "wasm"
FILES = ["kernels.wasm", "kernels-threads.wasm"]


def test_committed_wasm_is_the_build_of_its_source(tmp_path):
    if not (shutil.which("clang") and shutil.which("wasm-ld")):
        msg = "clang and wasm-ld are needed to rebuild the Wasm kernels: apt-get install clang lld (scripts/setup)"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    proc = subprocess.run([str(ROOT / "scripts" / "build-wasm"), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in FILES:
        built, committed = (tmp_path / name).read_bytes(), (WASM / name).read_bytes()
        assert built == committed, (f"runtime/backends/wasm/{name} is not the build of src/kernels.c: run "
                                    "scripts/build-wasm and commit the result")


def test_threaded_build_imports_a_shared_memory_and_exports_the_stack_pointer():
    """The thread pool needs both: one memory for every worker, a C stack per worker."""
    import re

    for name, shared in (("kernels.wasm", False), ("kernels-threads.wasm", True)):
        data = (WASM / name).read_bytes()
        assert data[:4] == b"\0asm"
        if shutil.which("wasm-objdump"):
            dump = subprocess.run(["wasm-objdump", "-x", str(WASM / name)], capture_output=True, text=True).stdout
            assert bool(re.search(r"memory\[0\].*shared", dump)) is shared, dump
            assert '-> "__stack_pointer"' in dump
