"""The ``sitegen`` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import yaml

import sitegen
from conftest import make_converted_folder
from sitegen.progress import ProgressReporter


def _run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "sitegen", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


REPO = Path(__file__).resolve().parents[1]

# Makes `import livereload` fail as it does where the package is not installed (issue 10).
_NO_LIVERELOAD = """\
import sys


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "livereload" or name.startswith("livereload."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


THREE_MISTAKES = """\
site:
  title: Three mistakes
models:
  tiny:
    source: model
apps:
  - title: Card
    model: tinny
    generation:
      top_p: 2
    ui:
      theme: darkk
"""


def test_version():
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sitegen {sitegen.__version__}"


def test_three_mistakes_reported_at_once(tmp_path):
    make_converted_folder(tmp_path / "model")
    (tmp_path / "app.yaml").write_text(THREE_MISTAKES)
    for verb in (["validate", "app.yaml"], ["build", "app.yaml", "-o", "out"]):
        r = _run(*verb, cwd=tmp_path)
        assert r.returncode == 1
        assert "Traceback" not in r.stderr
        assert r.stderr.splitlines() == [
            "app.yaml:8:12: apps[0].model: unknown model 'tinny' (did you mean 'tiny'?) "
            "(defined under 'models': tiny)",
            "app.yaml:10:14: apps[0].generation.top_p: must be > 0 and <= 1, got 2",
            "app.yaml:12:14: apps[0].ui.theme: expected one of 'light', 'dark', 'auto', got the "
            "string 'darkk' (did you mean 'dark'?)",
            "error: app.yaml: 3 errors in the spec",
        ]
        assert not (tmp_path / "out").exists()
    # Line numbers above, checked against the file itself.
    lines = THREE_MISTAKES.splitlines()
    assert lines[7].index("tinny") == 11 and lines[9].index("2") == 13
    assert lines[11].index("darkk") == 13


def test_validate_ok_and_strict(tmp_path):
    make_converted_folder(tmp_path / "model")
    text = THREE_MISTAKES.replace("tinny", "tiny").replace("2\n", "0.5\n").replace("darkk", "dark")
    (tmp_path / "app.yaml").write_text(text.replace("  title: Three", "  titel: x\n  title: Three"))
    r = _run("validate", "app.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "app.yaml:2:3: site.titel: warning: unknown key 'titel' (did you mean " \
                       "'title'?)\n"
    assert r.stdout == "app.yaml: ok (1 app, 1 model, 1 warning)\n"
    r = _run("validate", "--strict", "app.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "app.yaml:2:3: site.titel: unknown key 'titel' (did you mean 'title'?) (an error with "
        "--strict)", "error: app.yaml: 1 error in the spec"]


def test_build_command(tmp_path):
    make_converted_folder(tmp_path / "model")
    text = THREE_MISTAKES.replace("tinny", "tiny").replace("2\n", "0.5\n").replace("darkk", "dark")
    (tmp_path / "app.yaml").write_text(text)
    r = _run("build", "app.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"built 1 page into {tmp_path / 'out'}: /\n"
    assert (tmp_path / "out" / "index.html").is_file()
    r = _run("build", "missing.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == "error: missing.yaml: no such spec file (expected a YAML file such as " \
                       "app.yaml)\n"


def test_new_scaffolds_a_valid_app_with_a_comment_on_every_key(tmp_path):
    r = _run("new", "myapp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    spec = tmp_path / "myapp" / "app.yaml"
    r = _run("validate", "--strict", str(spec))
    assert r.returncode == 0, r.stderr
    lines = spec.read_text().splitlines()
    # Every key (found by the YAML parser itself) has a comment on the line above it.
    keys = []

    def walk(node):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                keys.append(k.start_mark.line)
                walk(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                walk(v)
    walk(yaml.compose(spec.read_text()))
    assert len(keys) > 30
    for line in keys:
        above = lines[line - 1].strip()
        assert above.startswith("#"), f"key on line {line + 1} has no comment: {lines[line]!r}"
    r = _run("new", "myapp", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == "error: 'myapp' already exists and is not an empty folder; choose a new " \
                       "folder name\n"


def test_progress_plain_lines_and_bar():
    out = io.StringIO()
    p = ProgressReporter(out, tty=False)
    for done in range(0, 101, 5):
        p("convert", done * 2**20, 100 * 2**20)
    assert out.getvalue().splitlines() == [
        "convert: 0% (0.0 MiB of 100.0 MiB)", "convert: 25% (25.0 MiB of 100.0 MiB)",
        "convert: 50% (50.0 MiB of 100.0 MiB)", "convert: 75% (75.0 MiB of 100.0 MiB)",
        "convert: 100% (100.0 MiB of 100.0 MiB)"]
    out = io.StringIO()
    p = ProgressReporter(out, tty=True, width=10, interval=0)
    p("copy", 5, 10)
    p("copy", 10, 10)
    assert out.getvalue() == ("\rcopy [#####-----]  50.0% 0.0 MiB / 0.0 MiB"
                              "\rcopy [##########] 100.0% 0.0 MiB / 0.0 MiB\n")


def _env_without_livereload(tmp_path) -> dict:
    blocker = tmp_path / "no_livereload"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_NO_LIVERELOAD)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(blocker), env.get("PYTHONPATH")) if p)
    return env


def test_commands_other_than_serve_work_without_livereload(tmp_path):
    env = _env_without_livereload(tmp_path)
    check = subprocess.run([sys.executable, "-c", "import livereload"], env=env, capture_output=True, text=True)
    assert check.returncode == 1 and "No module named 'livereload'" in check.stderr  # the blocker works
    r = _run("convert", "--help", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: sitegen convert ")
    r = _run("--help", env=env)
    assert r.returncode == 0, r.stderr
    assert all(verb in r.stdout for verb in ("new", "validate", "build", "serve", "convert"))
    r = _run("validate", str(REPO / "sample_sites" / "chat" / "app.yaml"), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(": ok (1 app, 1 model, 0 warnings)\n")
    make_converted_folder(tmp_path / "model")
    text = THREE_MISTAKES.replace("tinny", "tiny").replace("2\n", "0.5\n").replace("darkk", "dark")
    (tmp_path / "app.yaml").write_text(text)
    r = _run("build", "app.yaml", "-o", "out", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "index.html").is_file()


def test_serve_without_livereload_is_one_error_line(tmp_path):
    r = _run("serve", str(REPO / "sample_sites" / "chat" / "app.yaml"), env=_env_without_livereload(tmp_path))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == ("error: sitegen serve needs the 'livereload' package, which is not installed; "
                        "install it with: pip install livereload\n")


def test_importing_the_cli_loads_no_command_module():
    code = ("import sys, sitegen.cli; "
            "print(' '.join(sorted(m for m in sys.modules if m.partition('.')[0] in "
            "('livereload', 'tornado', 'jinja2', 'numpy') or m.startswith('sitegen.commands.') "
            "or m in ('sitegen.build', 'sitegen.serve', 'sitegen.convert'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == []
