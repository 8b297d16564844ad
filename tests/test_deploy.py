"""Host profiles, the service worker's shell and weights on another origin, at build time (issue 15).

The browser side is tests/test_deploy_browser.py; gh-deploy is tests/test_deploy_gh.py.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import make_converted_folder
from sitegen.build import build, build_site
from sitegen.errors import BuildError
from sitegen.spec import SpecErrors, load_spec

MIB = 2 ** 20

SPEC = """site:
  title: Deploy test
{site}models:
  tiny:
    source: model
{model}apps:
  - path: /
    title: Chat
  - path: /cards/birthday/
    title: Card
"""


def write_spec(tmp_path: Path, site: str = "", model: str = "", *, n_shards: int = 2) -> Path:
    if not (tmp_path / "model").exists():
        make_converted_folder(tmp_path / "model", n_shards=n_shards)
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC.format(site=site, model=model))
    return spec


def files_of(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def parse_headers(text: str) -> list[tuple[str, dict]]:
    """A `_headers` file as (path pattern, headers), the syntax Cloudflare Pages and Netlify share."""
    rules: list[tuple[str, dict]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if not line.startswith((" ", "\t")):
            rules.append((line.strip(), {}))
        else:
            name, _, value = line.strip().partition(":")
            rules[-1][1][name.strip()] = value.strip()
    return rules


@pytest.mark.parametrize("host", ["cloudflare-pages", "netlify"])
def test_headers_file_isolates_and_caches_without_two_rules_setting_one_header(tmp_path, host):
    out = tmp_path / "out"
    build(write_spec(tmp_path, f"  host: {host}\n"), out)
    rules = parse_headers((out / "_headers").read_text())
    site_paths = sorted("/" + f for f in files_of(out) if f not in ("_headers", ".sitegen-build"))
    for path in site_paths:
        # Both hosts apply every matching rule and join a header set by two of them: never let that happen.
        matched = [h for pattern, h in rules if fnmatch.fnmatchcase(path, pattern)]
        names = [n for h in matched for n in h]
        assert len(names) == len(set(names)), (path, matched)
        headers = {k: v for h in matched for k, v in h.items()}
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin", path
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp", path
        hashed = path.startswith("/assets/") or re.fullmatch(r"/models/tiny/shard-\d+\.bin", path)
        if hashed:
            assert headers.get("Cache-Control") == "public, max-age=31536000, immutable", path
        else:
            assert "immutable" not in headers.get("Cache-Control", ""), path
    manifest = [h for p, h in rules if p == "/models/tiny/manifest.json"]
    assert manifest == [{"Cache-Control": "no-cache"}]
    assert not (out / ".nojekyll").exists()


def test_github_pages_gets_nojekyll_and_no_headers_file_and_generic_gets_neither(tmp_path):
    build(write_spec(tmp_path, "  host: github-pages\n"), tmp_path / "gh")
    assert (tmp_path / "gh" / ".nojekyll").read_text() == "" and not (tmp_path / "gh" / "_headers").exists()
    build(write_spec(tmp_path), tmp_path / "plain")
    assert not (tmp_path / "plain" / ".nojekyll").exists() and not (tmp_path / "plain" / "_headers").exists()
    assert (tmp_path / "plain" / "404.html").is_file()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith(("data:", "#"))]


@pytest.mark.parametrize("base_url, base", [("https://ada.github.io/demo-repo/", "/demo-repo/"),
                                            ("https://example.org", "/"), (None, "/")])
def test_404_page_links_are_absolute_from_the_base_path_and_exist(tmp_path, base_url, base):
    site = f"  base_url: {base_url}\n" if base_url else ""
    out = tmp_path / "out"
    build(write_spec(tmp_path, site), out)
    parser = _Links()
    parser.feed((out / "404.html").read_text())
    assert parser.urls
    for url in parser.urls:
        assert url.startswith(base), url
        target = out / url[len(base):]
        assert (target / "index.html" if url.endswith("/") else target).is_file(), url


def test_base_url_flag_overrides_the_spec_and_bad_values_are_one_error(tmp_path):
    spec = write_spec(tmp_path, "  base_url: https://example.org/\n")
    build(spec, tmp_path / "out", base_url="https://ada.github.io/x")
    assert 'href="/x/assets/' in (tmp_path / "out" / "404.html").read_text()
    r = subprocess.run([sys.executable, "-m", "sitegen", "build", str(spec), "-o", str(tmp_path / "out"),
                        "--base-url", "ftp://x"], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: --base-url: expected an http:// or https:// URL such as "
                                "https://USER.github.io/REPO/, got 'ftp://x'")


def test_unknown_host_is_a_located_spec_error(tmp_path):
    with pytest.raises(SpecErrors) as e:
        load_spec(write_spec(tmp_path, "  host: github-page\n"))
    [p] = e.value.problems
    assert (p.line, p.col, p.key) == (3, 9, "site.host")
    assert p.message == ("expected one of 'generic', 'github-pages', 'cloudflare-pages', 'netlify', got "
                         "the string 'github-page' (did you mean 'github-pages'?)")


def sparse_shards(folder: Path, size: int) -> None:
    """Replace every shard of a converted folder by a ``size``-byte sparse file (a new file: a previous
    build hard-linked the old one)."""
    for shard in folder.glob("shard-*.bin"):
        shard.unlink()
        with open(shard, "wb") as f:
            f.truncate(size)


def test_cloudflare_file_limit_names_the_file_and_leaves_out_as_it_was(tmp_path):
    spec = write_spec(tmp_path, "  host: cloudflare-pages\n")
    out = tmp_path / "out"
    build(spec, out)
    before = {f: (out / f).read_bytes() for f in files_of(out)}
    sparse_shards(tmp_path / "model", 26 * MIB)
    with pytest.raises(BuildError) as e:
        build(spec, out)
    assert str(e.value) == (
        f"{spec}:3:9: site.host: models/tiny/shard-00000.bin is 26.0 MiB, over Cloudflare Pages' limit of "
        f"25.0 MiB per file (https://developers.cloudflare.com/pages/platform/limits/); lower "
        f"models.tiny.shard_size (e.g. 16MiB), or host the weights elsewhere: set models.tiny.host.base_url "
        f"(a Hugging Face repository or a bucket, see docs/deploy.md)")
    assert {f: (out / f).read_bytes() for f in files_of(out)} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no half-written folder


def test_github_pages_site_limit_advises_hosting_weights_elsewhere(tmp_path):
    make_converted_folder(tmp_path / "model", shard_bytes=100, n_shards=11)
    sparse_shards(tmp_path / "model", 95 * MIB)  # each under 100 MiB, 1.1 GB together
    spec = write_spec(tmp_path, "  host: github-pages\n")
    with pytest.raises(BuildError) as e:
        build(spec, tmp_path / "out")
    assert str(e.value).startswith(f"{spec}:3:9: site.host: the site is 1.10 GB, over GitHub Pages' limit of 1 GB "
                                   f"for a site (https://docs.github.com/")
    assert str(e.value).endswith("; host the weights elsewhere: set models.<name>.host.base_url (models here: tiny) "
                                 "(a Hugging Face repository or a bucket, see docs/deploy.md)")
    assert not (tmp_path / "out").exists()
    # The same weights on another origin: the site itself is small, and the build goes through.
    spec.write_text(SPEC.format(site="  host: github-pages\n",
                                model="    host: {base_url: 'https://huggingface.co/ada/w/resolve/main/tiny/'}\n"))
    result = build(spec, tmp_path / "out")
    assert result.uploads == [("tiny", tmp_path / "out-weights" / "tiny",
                               "https://huggingface.co/ada/w/resolve/main/tiny/")]
    assert len(list((tmp_path / "out-weights" / "tiny").glob("shard-*.bin"))) == 11


def test_cloudflare_file_count_limit():
    from sitegen.deploy.hosts import HOSTS, check_limits

    files = [(f"models/m/shard-{i:05d}.bin", 10) for i in range(20_001)]
    with pytest.raises(BuildError) as e:
        check_limits(HOSTS["cloudflare-pages"], files, file="app.yaml")
    assert str(e.value).startswith("app.yaml: site.host: the site has 20001 files, over Cloudflare Pages' limit of "
                                   "20,000 files")
    check_limits(HOSTS["cloudflare-pages"], files[:20_000], file="app.yaml")  # at the limit: fine
    check_limits(HOSTS["netlify"], files, file="app.yaml")


def test_service_worker_precaches_every_shell_file_with_its_hash_and_no_shard(tmp_path):
    out = tmp_path / "out"
    build(write_spec(tmp_path, "  host: cloudflare-pages\n"), out)
    text = (out / "sw.js").read_text()
    build_json = re.search(r"const BUILD = (\{.*?\});\n", text).group(1)
    config = json.loads(build_json)
    listed = {e["url"]: e["sha256"] for e in config["shell"]}
    files = files_of(out) - {"sw.js", "_headers", ".sitegen-build", "models/tiny/shard-00000.bin",
                             "models/tiny/shard-00001.bin"}
    pages = {"./": "index.html", "cards/birthday/": "cards/birthday/index.html"}
    assert set(listed) == files | set(pages)
    for url, digest in listed.items():
        assert hashlib.sha256((out / pages.get(url, url)).read_bytes()).hexdigest() == digest, url
    assert any(u.endswith(".wasm") for u in listed) or not list(out.rglob("*.wasm"))
    assert config["isolate"] is True
    # Every page links the web app manifest and loads the registration script, which exists.
    for page in ("index.html", "cards/birthday/index.html"):
        html = (out / page).read_text()
        up = "../../" if "/" in page else ""
        assert f'<link rel="manifest" href="{up}manifest.webmanifest">' in html
        script = re.search(r'<script type="module" src="([^"]*offline-[0-9a-f]+\.js)">', html).group(1)
        assert (out / page).parent.joinpath(script).resolve().is_file()
    manifest = json.loads((out / "manifest.webmanifest").read_text())
    assert manifest["name"] == "Deploy test" and manifest["start_url"] == "./" and manifest["display"] == "standalone"
    assert (out / manifest["icons"][0]["src"]).is_file()


def test_a_changed_file_changes_the_version_and_an_identical_build_does_not(tmp_path):
    def version(out):
        return re.search(r'"version":"([0-9a-f]+)"', (out / "sw.js").read_text()).group(1)

    spec = write_spec(tmp_path)
    build(spec, tmp_path / "a")
    build(spec, tmp_path / "b")
    assert version(tmp_path / "a") == version(tmp_path / "b")
    spec.write_text(spec.read_text().replace("title: Card", "title: Cards"))
    build(spec, tmp_path / "c")
    assert version(tmp_path / "c") != version(tmp_path / "a")


def test_offline_false_and_the_preview_have_no_service_worker(tmp_path):
    build(write_spec(tmp_path, "  offline: false\n"), tmp_path / "off")
    assert not (tmp_path / "off" / "manifest.webmanifest").exists()
    assert 'rel="manifest"' not in (tmp_path / "off" / "index.html").read_text()
    assert not list((tmp_path / "off" / "assets").glob("offline-*.js"))  # no page registers a worker...
    retire = re.search(r"const BUILD = (\{.*?\});\n", (tmp_path / "off" / "sw.js").read_text()).group(1)
    assert json.loads(retire) == {"version": "retired", "shell": [], "isolate": False, "retire": True}
    # ...but an earlier build's worker, at its next update check, finds this one, which removes it.
    # sitegen serve builds with build_site's default: no service worker caching a preview.
    build_site(load_spec(write_spec(tmp_path)), tmp_path / "preview", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "preview" / "sw.js").exists()
    assert 'rel="manifest"' not in (tmp_path / "preview" / "index.html").read_text()


def test_build_prints_what_to_upload_where(tmp_path):
    spec = write_spec(tmp_path, "", "    host: {base_url: 'https://huggingface.co/ada/w/resolve/main/tiny'}\n")
    r = subprocess.run([sys.executable, "-m", "sitegen", "build", str(spec), "-o", str(tmp_path / "site")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "site-weights" / "tiny"
    size = sum(p.stat().st_size for p in weights.iterdir()) / MIB
    assert (f"note: model 'tiny': upload the 3 files of {weights}/ ({size:.1f} MiB) to "
            f"https://huggingface.co/ada/w/resolve/main/tiny/ (the site reads its shards from there; it must "
            f"answer with CORS headers, see docs/deploy.md)\n"
            f"      e.g. hf upload ada/w {weights} tiny --revision main") in r.stderr
    assert sorted(p.name for p in weights.iterdir()) == ["manifest.json", "shard-00000.bin", "shard-00001.bin"]
    assert json.loads((tmp_path / "site" / "app.json").read_text())["model"]["base_url"] == \
        "https://huggingface.co/ada/w/resolve/main/tiny/"


def test_weights_out_must_not_overlap_the_site_or_hold_other_files(tmp_path):
    spec = write_spec(tmp_path, "", "    host: {base_url: 'https://cdn.example.org/w/'}\n")
    with pytest.raises(BuildError) as e:
        build(spec, tmp_path / "out", weights_out=tmp_path / "out" / "w")
    assert str(e.value) == (f"--weights-out: --weights-out {str(tmp_path / 'out' / 'w')!r} overlaps the site's "
                            f"folder {str(tmp_path / 'out')!r}; the weights must not be published with the site: "
                            f"choose a folder beside it")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(BuildError) as e:
        build(spec, tmp_path / "out", weights_out=mine)
    assert str(e.value) == (f"output {str(mine)!r} is not empty and was not written by sitegen build (no "
                            f".sitegen-build file); a build replaces OUT whole, so empty or remove it, or choose "
                            f"another --weights-out")
    assert (mine / "keep.txt").read_text() == "mine" and not (tmp_path / "out").exists()
