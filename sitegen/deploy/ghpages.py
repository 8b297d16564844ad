"""``sitegen gh-deploy``: build and commit the site to the Pages branch, then push (issue 15).

Like ``mkdocs gh-deploy``: the site is built into a temporary folder (GitHub Pages' limits
checked there, so a site GitHub would refuse is never committed), committed with git's
plumbing through a temporary index (``git add`` with the build as work tree, ``write-tree``,
``commit-tree`` on the branch's tip, ``update-ref``), so the author's index, working tree
and current branch are never touched; then the branch is pushed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import DeployError, SitegenError

__all__ = ["DeployResult", "gh_deploy", "pages_url"]


@dataclass
class DeployResult:
    commit: str
    branch: str
    remote: str
    url: str | None
    pushed: bool
    build: object  # the BuildResult


_GITHUB = re.compile(r"(?:https://|ssh://git@|git@)github\.com[:/]([^/]+)/([^/]+?)(?:\.git)?/?")


def pages_url(remote_url: str) -> str | None:
    """The GitHub Pages URL of a github.com remote: user sites at the root, project sites
    under ``/<repo>/``; None for other hosts."""
    m = _GITHUB.fullmatch(remote_url.strip())
    if not m:
        return None
    user, repo = m.group(1), m.group(2)
    if repo.lower() == f"{user.lower()}.github.io":
        return f"https://{user.lower()}.github.io/"
    return f"https://{user.lower()}.github.io/{repo}/"


def _git(args: list[str], *, cwd: Path, env: dict | None = None, check: bool = True,
         what: str = "") -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise DeployError("git is not installed; gh-deploy commits the site with git "
                          "(install it, e.g. apt-get install git)") from None
    if check and r.returncode != 0:
        detail = (r.stderr or r.stdout).strip().splitlines()
        raise DeployError(f"{what or 'git ' + args[0]} failed: "
                          f"{detail[-1] if detail else 'exit status ' + str(r.returncode)}")
    return r


def gh_deploy(spec_path: str | os.PathLike, *, remote: str = "origin", branch: str = "gh-pages",
              message: str | None = None, base_url: str | None = None, push: bool = True,
              strict: bool = False, progress=None, cache_dir=None,
              weights_out: str | os.PathLike | None = None) -> DeployResult:
    """Build ``spec_path`` for GitHub Pages and commit it to ``branch`` of its repository."""
    from ..build import build, check_base_url

    spec_path = Path(spec_path)
    if not spec_path.is_file():
        raise DeployError("no such spec file (expected a YAML file such as app.yaml)",
                          file=str(spec_path))
    spec_dir = spec_path.resolve().parent
    top = _git(["rev-parse", "--show-toplevel"], cwd=spec_dir, check=False)
    if top.returncode != 0:
        raise DeployError(f"{spec_dir} is not inside a git repository: gh-deploy commits the "
                          f"site to a branch of the spec's repository (run `git init` and add "
                          f"a remote, or build with `sitegen build` and upload the folder)",
                          file=str(spec_path))
    repo = Path(top.stdout.strip())
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch) or branch.startswith(("-", "/")) or \
            _git(["check-ref-format", f"refs/heads/{branch}"], cwd=repo, check=False).returncode:
        raise DeployError(f"{branch!r} is not a valid branch name", key="--branch")
    head = _git(["symbolic-ref", "-q", "--short", "HEAD"], cwd=repo, check=False).stdout.strip()
    if head == branch:
        raise DeployError(f"the current branch is {branch!r}, the branch gh-deploy writes the "
                          f"site to; switch to your source branch first, or choose another "
                          f"--branch", key="--branch")
    remote_url = None
    if push:
        r = _git(["remote", "get-url", remote], cwd=repo, check=False)
        if r.returncode != 0:
            names = _git(["remote"], cwd=repo, check=False).stdout.split()
            raise DeployError(f"the repository {repo} has no remote {remote!r} (remotes: "
                              f"{', '.join(names) or 'none'}); add one with `git remote add "
                              f"{remote} URL` or name another with --remote", key="--remote")
        remote_url = r.stdout.strip()
    if base_url is not None:
        base_url = check_base_url(base_url)
    elif remote_url:
        base_url = _spec_base_url(spec_path) or pages_url(remote_url)

    if weights_out is None:  # beside the repository: never in the author's working tree
        weights_out = repo.parent / f"{repo.name}-weights"
    work = Path(tempfile.mkdtemp(prefix="sitegen-gh-deploy-"))
    try:
        out = work / "site"
        result = build(spec_path, out, strict=strict, progress=progress, cache_dir=cache_dir,
                       weights_out=weights_out, base_url=base_url, host="github-pages")
        (out / ".sitegen-build").unlink(missing_ok=True)  # the builder's marker, not the site's
        if push:  # start from the remote's branch when it is ahead of (or unknown) here
            _git(["fetch", "-q", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}"],
                 cwd=repo, check=False)
        parent, local = _parent(repo, branch, remote if push else None)
        env = dict(os.environ, GIT_INDEX_FILE=str(work / "index"))
        # -f: the author's ignore rules (info/exclude, core.excludesFile) never drop a file.
        _git(["--work-tree", str(out), "add", "-A", "-f", "."], cwd=repo, env=env,
             what="git add (of the built site)")
        tree = _git(["write-tree"], cwd=repo, env=env).stdout.strip()
        if message is None:
            rev = _git(["rev-parse", "--short", "HEAD"], cwd=repo, check=False).stdout.strip()
            message = f"Deployed {rev} with sitegen {__version__}" if rev else \
                f"Deployed with sitegen {__version__}"
        args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
        commit = _git(args, cwd=repo, what="git commit-tree").stdout.strip()
        _git(["update-ref", f"refs/heads/{branch}", commit, local or ""], cwd=repo,
             what=f"git update-ref of {branch}")
        if push:
            r = _git(["push", "-q", remote, f"refs/heads/{branch}:refs/heads/{branch}"],
                     cwd=repo, check=False)
            if r.returncode != 0:
                lines = (r.stderr or r.stdout).strip().splitlines()
                # The remote's own words (a hook, a protected branch) first, then git's.
                said = [ln.removeprefix("remote:").strip() for ln in lines
                        if ln.startswith("remote:") and ln[7:].strip()]
                detail = "; ".join(said[:3] + lines[-1:]) or f"exit status {r.returncode}"
                raise DeployError(f"committed the site to {branch!r} ({commit[:12]}), but "
                                  f"`git push {remote} {branch}` failed: "
                                  f"{detail}; fix that and "
                                  f"push the branch yourself, or run gh-deploy again",
                                  key="--remote")
        return DeployResult(commit, branch, remote, base_url, push, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _spec_base_url(spec_path: Path) -> str | None:
    """site.base_url as written in the spec (None when absent or the spec has errors:
    the build reports those)."""
    from ..spec import load_spec

    try:
        return load_spec(spec_path).site.base_url
    except SitegenError:
        return None


def _parent(repo: Path, branch: str, remote: str | None) -> tuple[str | None, str | None]:
    """(the commit the new one goes on, the local branch's tip): the local branch, or the
    remote's when that is ahead."""
    def rev(ref: str) -> str | None:
        r = _git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], cwd=repo, check=False)
        return r.stdout.strip() or None

    local = rev(f"refs/heads/{branch}")
    theirs = rev(f"refs/remotes/{remote}/{branch}") if remote else None
    if theirs is None or theirs == local:
        return local, local
    if local is None:
        return theirs, None
    if _git(["merge-base", "--is-ancestor", local, theirs], cwd=repo, check=False).returncode == 0:
        return theirs, local  # someone else deployed since: build on theirs
    return local, local  # ours is ahead (or they diverged: the push says so)
