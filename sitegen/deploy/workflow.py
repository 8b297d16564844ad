"""A GitHub Actions workflow that builds a sitegen site and deploys it to GitHub Pages with
the official Pages actions, caching converted weights between runs (issue 15, item 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

from .. import __version__
from ..errors import DeployError

__all__ = ["WORKFLOW_PATH", "workflow", "write_workflow"]

WORKFLOW_PATH = PurePosixPath(".github/workflows/sitegen-pages.yml")

_TEMPLATE = """\
# Builds the sitegen site of {spec} and deploys it to GitHub Pages (written by
# `sitegen new --github-actions`; see sitegen's docs/deploy.md). Turn it on once in the
# repository's Settings > Pages > Build and deployment > Source: GitHub Actions.
name: Deploy the sitegen site to GitHub Pages

on:
  push:
    branches: [{branch}]
  workflow_dispatch:

permissions:
  contents: read
  pages: write
  id-token: write

# One deployment at a time; a newer push waits rather than cancelling a deployment under way.
concurrency:
  group: pages
  cancel-in-progress: false

env:
  # How to install sitegen: a version from the package index, or e.g.
  # "sitegen @ git+https://github.com/OWNER/sitegen@main".
  SITEGEN_PACKAGE: "sitegen=={version}"
  # Converted weights are cached here between runs (actions/cache below): a model is
  # converted again only when the spec changes.
  SITEGEN_CACHE: ${{{{ github.workspace }}}}/.sitegen-cache

jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: Install sitegen
        run: python -m pip install "$SITEGEN_PACKAGE"
      - name: Cache converted weights
        uses: actions/cache@v4
        with:
          path: .sitegen-cache
          key: sitegen-weights-${{{{ runner.os }}}}-${{{{ hashFiles('{spec}') }}}}
          restore-keys: |
            sitegen-weights-${{{{ runner.os }}}}-
      - name: Configure Pages
        id: pages
        uses: actions/configure-pages@v5
      - name: Build the site
        # --base-url: a project site lives under /<repo>/ (its 404 page needs the path).
        run: sitegen build "{spec}" -o _site --base-url "${{{{ steps.pages.outputs.base_url }}}}/"
      - name: Upload the site
        uses: actions/upload-pages-artifact@v3
        with:
          path: _site

  deploy:
    needs: build
    runs-on: ubuntu-latest
    environment:
      name: github-pages
      url: ${{{{ steps.deployment.outputs.page_url }}}}
    steps:
      - name: Deploy to GitHub Pages
        id: deployment
        uses: actions/deploy-pages@v4
"""


def workflow(spec: str, *, branch: str = "main") -> str:
    """The workflow's text for the spec at ``spec`` (a path relative to the repository root)."""
    return _TEMPLATE.format(spec=spec, branch=branch, version=__version__)


def _repo_root(folder: Path) -> Path | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder,
                           capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return Path(r.stdout.strip()) if r.returncode == 0 else None


def write_workflow(spec_path: Path, *, root: Path | None = None) -> Path:
    """Write the workflow for ``spec_path`` into the root of its git repository (else the
    current folder); refuse to overwrite one."""
    spec_path = spec_path.resolve()
    root = root or _repo_root(spec_path.parent) or Path.cwd().resolve()
    try:
        rel = spec_path.relative_to(root).as_posix()
    except ValueError:
        raise DeployError(f"the spec {spec_path} is outside {root}, where the workflow goes; "
                           f"run sitegen new inside the repository", key="--github-actions"
                           ) from None
    branch = "main"
    r = subprocess.run(["git", "symbolic-ref", "-q", "--short", "HEAD"], cwd=root,
                       capture_output=True, text=True) if (root / ".git").exists() else None
    if r is not None and r.returncode == 0 and r.stdout.strip():
        branch = r.stdout.strip()
    target = root / WORKFLOW_PATH
    if target.exists():
        raise DeployError(f"{target} already exists; remove it to write a new one",
                           key="--github-actions")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(workflow(rel, branch=branch), "utf-8")
    return target
