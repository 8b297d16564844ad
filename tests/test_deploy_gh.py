"""``sitegen gh-deploy`` against a local bare repository (issue 15: GitHub is not reachable here).

The oracle for the branch's content is ``sitegen build`` of the same spec (builds are
byte-identical), and git itself for what happened to the author's repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_converted_folder

ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20

SPEC = """site:
  title: {title}
models:
  tiny:
    source: model
apps:
  - path: /
    title: Chat
  - path: /card/
    title: Card
"""


def git(*args, cwd, env, check=True) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, (args, r.stderr)
    return r.stdout.strip()


@pytest.fixture
def env(tmp_path) -> dict:
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Author\n\temail = author@example.org\n"
                      "[init]\n\tdefaultBranch = main\n")
    return dict(os.environ, GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")


@pytest.fixture
def repo(tmp_path, env) -> Path:
    """The author's repository (spec, model, one commit on main) with a bare 'origin'."""
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path, env=env)
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", cwd=work, env=env)
    (work / "app.yaml").write_text(SPEC.format(title="First"))
    make_converted_folder(work / "model", n_shards=2)
    (work / "notes.txt").write_text("uncommitted work\n")  # must survive a deploy untouched
    git("add", "app.yaml", "model", cwd=work, env=env)
    git("commit", "-q", "-m", "source", cwd=work, env=env)
    git("remote", "add", "origin", str(bare), cwd=work, env=env)
    git("push", "-q", "origin", "main", cwd=work, env=env)
    return work


def deploy(cwd: Path, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sitegen", "gh-deploy", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def state(work: Path, env: dict) -> tuple:
    """What gh-deploy must not change: branch, HEAD, index, working tree."""
    return (git("symbolic-ref", "HEAD", cwd=work, env=env), git("rev-parse", "HEAD", cwd=work, env=env),
            git("status", "--porcelain", "--untracked-files=all", cwd=work, env=env),
            git("ls-files", "-s", cwd=work, env=env), (work / "notes.txt").read_text())


def branch_files(bare: Path, env: dict, ref="gh-pages") -> dict[str, bytes]:
    names = git("ls-tree", "-r", "--name-only", ref, cwd=bare, env=env).splitlines()
    return {n: subprocess.run(["git", "show", f"{ref}:{n}"], cwd=bare, env=env, capture_output=True,
                              check=True).stdout for n in names}


def built_files(spec: Path, out: Path, env: dict, *args) -> dict[str, bytes]:
    r = subprocess.run([sys.executable, "-m", "sitegen", "build", str(spec), "-o", str(out), *args], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and p.name != ".sitegen-build"}


def test_deploy_commits_the_site_then_a_second_commit_and_leaves_the_author_alone(repo, env, tmp_path):
    bare = tmp_path / "remote.git"
    before = state(repo, env)
    r = deploy(repo, env, "app.yaml", "--base-url", "https://author.github.io/work/")
    assert r.returncode == 0, r.stderr
    assert "committed the site (/, /card/) to gh-pages" in r.stdout
    files = branch_files(bare, env)
    assert files[".nojekyll"] == b""
    # The same files `sitegen build` writes for GitHub Pages (site.host overridden by gh-deploy).
    spec_copy = tmp_path / "oracle" / "app.yaml"
    spec_copy.parent.mkdir()
    spec_copy.write_text(SPEC.format(title="First").replace("  title: First", "  title: First\n  host: github-pages"))
    make_converted_folder(spec_copy.parent / "model", n_shards=2)
    want = built_files(spec_copy, tmp_path / "oracle-site", env, "--base-url", "https://author.github.io/work/")
    assert files == want
    assert "models/tiny/shard-00001.bin" in files and "sw.js" in files and "404.html" in files
    assert b'href="/work/assets/' in files["404.html"]  # the project site's base path
    first = git("rev-parse", "gh-pages", cwd=bare, env=env)
    assert git("rev-list", "--count", "gh-pages", cwd=bare, env=env) == "1"
    assert state(repo, env) == before  # branch, HEAD, index and working tree untouched
    assert git("rev-parse", "main", cwd=bare, env=env) == git("rev-parse", "main", cwd=repo, env=env)

    # A second deploy, after a change, is one more commit on the branch's tip.
    (repo / "app.yaml").write_text(SPEC.format(title="Second"))
    git("commit", "-q", "-am", "retitle", cwd=repo, env=env)
    before = state(repo, env)
    r = deploy(repo, env, "app.yaml", "--message", "second deploy")
    assert r.returncode == 0, r.stderr
    assert git("rev-list", "--count", "gh-pages", cwd=bare, env=env) == "2"
    assert git("rev-parse", "gh-pages^", cwd=bare, env=env) == first
    assert git("log", "-1", "--format=%s", "gh-pages", cwd=bare, env=env) == "second deploy"
    assert b"Second" in branch_files(bare, env)["index.html"]
    assert state(repo, env) == before
    # Without --base-url, the remote is not on github.com: the 404 page assumes the host's root.
    assert b'href="/assets/' in branch_files(bare, env)["404.html"]


def test_default_message_names_the_source_commit(repo, env, tmp_path):
    r = deploy(repo, env, "app.yaml", "--no-push")
    assert r.returncode == 0, r.stderr
    head = git("rev-parse", "--short", "HEAD", cwd=repo, env=env)
    assert git("log", "-1", "--format=%s", "gh-pages", cwd=repo, env=env).startswith(f"Deployed {head} with sitegen")
    assert "not pushed" in r.stdout
    assert git("ls-remote", "--heads", str(tmp_path / "remote.git"), "gh-pages", cwd=repo, env=env) == ""


def test_a_too_large_file_is_refused_before_anything_is_committed(repo, env, tmp_path):
    bare = tmp_path / "remote.git"
    assert deploy(repo, env, "app.yaml").returncode == 0
    tip = git("rev-parse", "gh-pages", cwd=bare, env=env)
    # A converted model whose shard is over GitHub's 100 MiB per file (a sparse file: no disk).
    big = make_converted_folder(repo / "big", shard_bytes=100)
    with open(big / "shard-00000.bin", "r+b") as f:
        f.truncate(101 * MIB)
    (repo / "app.yaml").write_text(SPEC.format(title="Big").replace("source: model", "source: big"))
    before = state(repo, env)
    r = deploy(repo, env, "app.yaml")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "error: app.yaml: site.host: models/tiny/shard-00000.bin is 101.0 MiB, over GitHub Pages' limit "
        "of 100.0 MiB per file (https://docs.github.com/en/pages/getting-started-with-github-pages/"
        "github-pages-limits); lower models.tiny.shard_size (e.g. 16MiB), or host the weights elsewhere: "
        "set models.tiny.host.base_url (a Hugging Face repository or a bucket, see docs/deploy.md)")
    assert "Traceback" not in r.stderr
    assert git("rev-parse", "gh-pages", cwd=bare, env=env) == tip
    assert git("rev-parse", "gh-pages", cwd=repo, env=env) == tip
    assert state(repo, env) == before


def test_not_a_git_repository_is_refused(tmp_path, env):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "app.yaml").write_text(SPEC.format(title="x"))
    make_converted_folder(folder / "model")
    env = dict(env, GIT_CEILING_DIRECTORIES=str(tmp_path))  # no repository above tmp_path counts
    r = deploy(folder, env, "app.yaml")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"error: app.yaml: {folder.resolve()} is not inside a git repository: gh-deploy commits the site to a "
        f"branch of the spec's repository (run `git init` and add a remote, or build with `sitegen build` "
        f"and upload the folder)")
    assert not list(folder.glob("*-weights")) and sorted(p.name for p in folder.iterdir()) == ["app.yaml", "model"]


@pytest.mark.parametrize("args, message", [
    (["--remote", "upstream"], "error: --remote: the repository {repo} has no remote 'upstream' (remotes: origin); "
                               "add one with `git remote add upstream URL` or name another with --remote"),
    (["--branch", "bad..name"], "error: --branch: 'bad..name' is not a valid branch name"),
    (["--branch", "main"], "error: --branch: the current branch is 'main', the branch gh-deploy writes the site to; "
                           "switch to your source branch first, or choose another --branch"),
    (["--base-url", "github.io/x"], "error: --base-url: expected an http:// or https:// URL such as "
                                    "https://USER.github.io/REPO/, got 'github.io/x'"),
])
def test_bad_flags_are_one_error_line(repo, env, args, message):
    before = state(repo, env)
    r = deploy(repo, env, "app.yaml", *args)
    assert r.returncode == 1
    assert r.stderr.strip() == message.format(repo=repo.resolve())
    assert state(repo, env) == before
    assert git("branch", "--list", "gh-pages", cwd=repo, env=env) == ""


def test_a_rejected_push_says_the_branch_was_committed(repo, env, tmp_path):
    bare = tmp_path / "remote.git"
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pages are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    r = deploy(repo, env, "app.yaml")
    assert r.returncode == 1
    commit = git("rev-parse", "gh-pages", cwd=repo, env=env)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --remote: committed the site to 'gh-pages' ({commit[:12]}), but "
                           f"`git push origin gh-pages` failed: pages are frozen; "), last
    assert last.endswith("; fix that and push the branch yourself, or run gh-deploy again")
    assert git("ls-remote", "--heads", str(bare), "gh-pages", cwd=repo, env=env) == ""


def test_pages_url_of_github_remotes():
    from sitegen.deploy.ghpages import pages_url

    assert pages_url("https://github.com/Ada/demo-repo.git") == "https://ada.github.io/demo-repo/"
    assert pages_url("git@github.com:ada/demo-repo") == "https://ada.github.io/demo-repo/"
    assert pages_url("git@github.com:Ada/ada.github.io.git") == "https://ada.github.io/"
    assert pages_url("/srv/git/remote.git") is None
