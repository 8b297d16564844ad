"""The test suite's own guards (issue 11, "tests that could hide failures"): a missing oracle fails
in CI instead of skipping, and a kernels harness that runs past its time limit fails as one test
with its cause instead of as hundreds of errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _pytest(args: list[str], *, env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_missing_oracle_skips_locally_and_fails_in_ci(tmp_path):
    (tmp_path / "test_needs.py").write_text(
        "from oracles import need\nlib = need('no_such_oracle_module')\n\ndef test_x():\n    assert lib\n")
    base = {k: v for k, v in os.environ.items() if k != "CI"}
    base["PYTHONPATH"] = str(TESTS)
    local = _pytest([str(tmp_path)], env=base, cwd=tmp_path)
    # exit 5: nothing ran (the module skipped itself)
    assert local.returncode in (0, 5) and "1 skipped" in local.stdout, local.stdout + local.stderr
    ci = _pytest([str(tmp_path)], env={**base, "CI": "true"}, cwd=tmp_path)
    assert ci.returncode != 0, ci.stdout
    assert "test oracle 'no_such_oracle_module' is not importable" in ci.stdout + ci.stderr


def test_a_timed_out_kernel_batch_is_one_failure_with_its_cause():
    env = {**os.environ, "SITEGEN_KERNEL_TIMEOUT": "1"}
    env.pop("CI", None)
    p = _pytest([str(TESTS / "test_kernels.py"), "-rf"], env=env, cwd=TESTS.parent)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out[-3000:]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("1 failed"), summary
    assert "test_kernel_harness" in out and "ran past 1 s" in out, out[-3000:]
