"""Hardening of ``sitegen`` against bad input (issue 11): never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_converted_folder
from sitegen import cli


def test_unexpected_exception_is_one_error_line(monkeypatch, capsys):
    def boom(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("sitegen.commands.validate.run", boom)
    monkeypatch.delenv("SITEGEN_DEBUG", raising=False)
    assert cli.main(["validate", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert "error: OSError" in err and "report" in err and "Traceback" not in err


def test_sitegen_debug_reraises(monkeypatch):
    def boom(args):
        raise OSError("tmp")

    monkeypatch.setattr("sitegen.commands.validate.run", boom)
    monkeypatch.setenv("SITEGEN_DEBUG", "1")
    with pytest.raises(OSError):
        cli.main(["validate", "x.yaml"])


def test_deeply_nested_yaml_is_an_error_not_a_traceback(tmp_path, capsys):
    spec = tmp_path / "app.yaml"
    spec.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert cli.main(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err


# --- `sitegen validate` on hostile specs: exit 1, one located error, no traceback ----------
#
# Each case edits a valid spec and names the text where the error must be reported; the
# expected line and column come from searching the edited text, not from sitegen's code.

BASE = """\
site:
  title: Test site
models:
  tiny:
    source: model
apps:
  - path: /card/
    title: Card
    generation:
      temperature: 0.7
    ui:
      accent: teal
"""
ROOT = Path(__file__).resolve().parent.parent
BIG = "9" * 400        # an integer no float can hold
HUGE = "9" * 5000      # more digits than Python converts from text


def _spec(tmp_path: Path, text: str | bytes) -> Path:
    make_converted_folder(tmp_path / "model")
    path = tmp_path / "app.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SITEGEN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "sitegen", *args], capture_output=True,
                          text=True, errors="replace", cwd=ROOT, env=env, timeout=120)


def _pos(text: str, at: str) -> tuple[int, int]:
    assert text.count(at) == 1, f"marker {at!r} must occur once"
    i = text.index(at)
    return text.count("\n", 0, i) + 1, i - (text.rfind("\n", 0, i) + 1) + 1


def _errors(path: Path, out: str) -> list[str]:
    """The error lines of ``validate``'s output (not warnings, not the summary)."""
    return [ln for ln in out.splitlines() if ln.startswith(f"{path}:") and ": warning:" not in ln]


def _one_error(tmp_path, text, at, key, message, *, verb="validate"):
    """Run the CLI; it must fail with exactly one error, at ``at``, naming ``key``."""
    path = _spec(tmp_path, text)
    args = [verb, str(path)] + (["-o", str(tmp_path / "out")] if verb == "build" else [])
    r = _cli(*args)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-2000:]
    assert "Traceback" not in out and "unexpected" not in out, out[-2000:]
    errors = _errors(path, out)
    assert len(errors) == 1, errors
    line, col = _pos(text if isinstance(text, str) else text.decode("latin-1"), at)
    where = f"{path}:{line}:{col}: " + (f"{key}: " if key else "")
    assert errors[0].startswith(where), (errors[0][:300], where)
    assert message in errors[0][len(where):], errors[0][:300]
    return errors[0]


def _edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


# Class 1: YAML the loader cannot construct (tags, merge keys, dates, huge numbers).
UNREADABLE = [
    ("title: Card", "title: !shiny Card", "!shiny", "apps[0].title",
     "YAML tag '!shiny' is not accepted"),
    ("title: Card", "title: !!python/name:os.system", "!!python", "apps[0].title",
     "YAML tag '!!python/name:os.system' is not accepted"),
    ("title: Card", "title: !!python/object/apply:os.system [echo hi]", "!!python",
     "apps[0].title", "YAML tag '!!python/object/apply:os.system' is not accepted"),
    ("title: Card", "title: !!binary aGk=", "!!binary", "apps[0].title",
     "YAML tag '!!binary' is not accepted"),
    ("title: Card", "title: !!int lots", "!!int", "apps[0].title",
     "'lots' cannot be read as an integer; quote it to make it a string"),
    # Under a key the schema does not know, too: it must still be loadable YAML.
    ("  title: Test site", "  title: Test site\n  extra: !!python/name:os.system",
     "!!python", "site.extra", "is not accepted"),
    ("      accent: teal", "      <<: {accent: teal}", "<<", "apps[0].ui",
     "merge keys ('<<: *anchor') are not supported; write the keys out"),
    ("title: Card", "title: 2024-13-01", "2024-13-01", "apps[0].title",
     "'2024-13-01' cannot be read as a date (month must be in 1..12); quote it"),
    ("title: Card", "title: 2024-12-01", "2024-12-01", "apps[0].title",
     "expected a string, got the date '2024-12-01' (quote it to make it a string)"),
    ("temperature: 0.7", f"temperature: {BIG}", BIG, "apps[0].generation.temperature",
     "is too large for a number, got an integer of 400 digits"),
    ("temperature: 0.7", "temperature: 1.0e+400", "1.0e+400",
     "apps[0].generation.temperature", "must be a finite number, got inf"),
    ("temperature: 0.7", f"temperature: {HUGE}", HUGE, "apps[0].generation.temperature",
     "cannot be read as an integer (it has 5000 characters)"),
    ("temperature: 0.7", "temperature: 0.7\n      seed: " + BIG, BIG, "apps[0].generation.seed",
     "must be an integer >= 0 and <= 4.29497e+09, got 9.99999e+399"),
    ("    source: model", "    source: model\n    shard_size: " + BIG, BIG,
     "models.tiny.shard_size", "must be at most 100 MiB (GitHub Pages refuses larger files), "
                               "got about 9.99999e+399 bytes"),
    ("    source: model", "    source: model\n    shard_size: " + BIG + "GiB", BIG,
     "models.tiny.shard_size", "must be at most 100 MiB"),
    ("    source: model", "    source: model\n    shard_size: 99999999999999999999GiB",
     "99999999999999999999GiB", "models.tiny.shard_size", "must be at most 100 MiB"),
]


@pytest.mark.parametrize("old,new,at,key,message", UNREADABLE,
                         ids=[c[1][:40].strip() for c in UNREADABLE])
def test_unreadable_yaml_is_one_located_error(tmp_path, old, new, at, key, message):
    _one_error(tmp_path, _edit(old, new), at, key, message)


def test_aliases_are_accepted_and_recursive_ones_cost_nothing(tmp_path):
    text = _edit("title: Card", "title: *t").replace("title: Test site", "title: &t Test site")
    text += "loop: &loop [*loop]\n"  # an unknown key (a warning) holding a recursive list
    r = _cli("validate", str(_spec(tmp_path, text)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unknown key 'loop'" in r.stdout + r.stderr


# Class 2: errors that used to lose their line.
def test_binary_garbage_reports_line_and_column(tmp_path):
    text = BASE.encode().replace(b"title: Card", b"title: C\xff\xfe\x00ard")
    _one_error(tmp_path, text, "\xff", "", "not UTF-8 text: byte 0xff")


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f"])
def test_control_character_reports_line_and_column(tmp_path, char):
    text = _edit("title: Card", f"title: Ca{char}rd")
    _one_error(tmp_path, text, char, "",
               f"invalid YAML: character U+{ord(char):04X} is not allowed in YAML")


def test_a_binary_file_reports_line_and_column(tmp_path):
    data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    _one_error(tmp_path, data, "\x89", "", "not UTF-8 text: byte 0x89")


def test_shard_size_not_a_multiple_of_256_fails_validate_at_its_line(tmp_path):
    text = _edit("    source: model", "    source: model\n    shard_size: 100001")
    _one_error(tmp_path, text, "100001", "models.tiny.shard_size",
               "must be a multiple of 256 bytes (the converter cuts the weights at 256-byte "
               "boundaries), got 100001 bytes (e.g. 99840 or 100096)")


def test_what_validate_accepts_the_converter_accepts():
    """Everything build can reject about a model's options, validate rejects first."""
    from sitegen.convert import DTYPES, _check_options
    from sitegen.spec.schema import Model

    assert set(Model._options["quantization"].choices) <= set(DTYPES)
    size = Model._options["shard_size"]
    assert size.min >= 4096 and size.min % 256 == 0 and size.multiple_of % 256 == 0
    for n in (size.min, size.default, size.max, 3 * 256 * 1000):
        _check_options("q4", None, n)


# Class 3: an error about a huge value quotes a short prefix of it.
FIVE_MB = "b" * 5_000_000
LONG_VALUE = "b" * 100_000  # as telling as 5 MB (a message quotes 60 characters), and faster
LONG = [
    ("title: Card", "title: Card\n    model: " + FIVE_MB, "apps[0].model"),
    ("path: /card/", "path: /" + FIVE_MB + " x/", "apps[0].path"),
    ("accent: teal", "accent: " + LONG_VALUE, "apps[0].ui.accent"),
    ("  title: Test site", "  title: Test site\n  language: " + LONG_VALUE, "site.language"),
    ("  title: Test site", "  title: Test site\n  favicon: " + LONG_VALUE + ".png", "site.favicon"),
    ("  title: Test site", "  title: Test site\n  base_url: " + LONG_VALUE, "site.base_url"),
    ("source: model", "source: " + LONG_VALUE, "models.tiny.source"),
    ("source: model", "source: hf:" + LONG_VALUE, "models.tiny.source"),
    ("title: Card", "title: !!int " + LONG_VALUE, "apps[0].title"),
]


@pytest.mark.parametrize("old,new,key", LONG, ids=[c[2] + "-" + c[1][:12] for c in LONG])
def test_a_huge_value_is_quoted_short(tmp_path, old, new, key):
    path = _spec(tmp_path, _edit(old, new))
    r = _cli("validate", str(path))
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out and "unexpected" not in out, out[:2000]
    [error] = _errors(path, out)
    assert f": {key}: " in error and "…" in error, error[:500]
    assert len(out) < 1500, out[:2000]


def test_a_huge_unknown_key_is_quoted_short(tmp_path):
    path = _spec(tmp_path, _edit("  title: Test site", f"  title: Test site\n  ? {FIVE_MB}\n  : 1"))
    r = _cli("validate", "--strict", str(path))
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "unknown key" in out and len(out) < 1500, out[:2000]


# Class 4: files a spec names, and page paths that collide with generated files.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)


def _favicon(name: str) -> str:
    return _edit("  title: Test site", f"  title: Test site\n  favicon: {name}")


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "sub/../../x.png"])
def test_favicon_outside_the_spec_folder_is_an_error(tmp_path, name):
    text = _favicon(name)
    _one_error(tmp_path, text, name, "site.favicon",
               f"{name!r} is outside the spec's folder")


def test_favicon_symlink_out_of_the_spec_folder_is_an_error(tmp_path):
    (tmp_path / "outside.png").write_bytes(PNG)
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "icon.png").symlink_to(tmp_path / "outside.png")
    _one_error(tmp_path / "spec", _favicon("icon.png"), "icon.png", "site.favicon",
               "'icon.png' is outside the spec's folder")


def test_favicon_must_be_an_image_type_browsers_accept(tmp_path):
    (tmp_path / "icon.txt").write_text("hello")
    _one_error(tmp_path, _favicon("icon.txt"), "icon.txt", "site.favicon",
               "'icon.txt' is not one of the accepted file types (.ico .png .gif .jpg .jpeg "
               ".webp .svg)")


@pytest.mark.parametrize("name", ["icon.png", "icon.ico", "icon.svg", "icon.webp"])
def test_favicon_bytes_must_match_its_type(tmp_path, name):
    (tmp_path / name).write_text("root:x:0:0:root:/root:/bin/bash\n")
    _one_error(tmp_path, _favicon(name), name, "site.favicon",
               f"{name!r}: does not look like a")


@pytest.mark.parametrize("name,data", [
    ("icon.png", PNG), ("icon.ico", b"\x00\x00\x01\x00" + bytes(20)),
    ("icon.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>\n'),
    ("icon.gif", b"GIF89a" + bytes(20)), ("icon.jpg", b"\xff\xd8\xff\xe0" + bytes(20)),
    ("icon.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(20)), ("sub/ICON.PNG", PNG)])
def test_favicon_of_each_accepted_type_validates(tmp_path, name, data):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_bytes(data)
    r = _cli("validate", str(_spec(tmp_path, _favicon(name))))
    assert r.returncode == 0, r.stdout + r.stderr


def test_theme_dir_outside_the_spec_folder_is_an_error(tmp_path):
    (tmp_path / "theme").mkdir()
    (tmp_path / "spec").mkdir()
    text = _edit("  title: Test site", "  title: Test site\n  theme_dir: ../theme")
    _one_error(tmp_path / "spec", text, "../theme", "site.theme_dir",
               "'../theme' is outside the spec's folder")


def test_relative_model_path_must_stay_inside_the_spec_folder(tmp_path):
    make_converted_folder(tmp_path / "elsewhere")
    (tmp_path / "spec").mkdir()
    text = _edit("source: model", "source: ../elsewhere")
    _one_error(tmp_path / "spec", text, "../elsewhere", "models.tiny.source",
               "'../elsewhere' is outside the spec's folder")


def test_absolute_and_symlinked_model_paths_are_allowed(tmp_path):
    """An absolute path is the author's explicit choice; so is a symlink in the spec folder."""
    outside = make_converted_folder(tmp_path / "elsewhere")
    (tmp_path / "spec").mkdir()
    r = _cli("validate", str(_spec(tmp_path / "spec", _edit("source: model",
                                                               f"source: {outside}"))))
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "spec" / "linked").symlink_to(outside)
    r = _cli("validate", str(_spec(tmp_path / "spec", _edit("source: model",
                                                               "source: linked"))))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("page", ["/index.html", "/app.json", "/card/index.html", "/App.JSON/x/"])
def test_page_path_colliding_with_generated_files(tmp_path, page):
    seg = next(s for s in page.strip("/").split("/") if s.lower() in ("index.html", "app.json"))
    _one_error(tmp_path, _edit("path: /card/", f"path: {page}"), page, "apps[0].path",
               f"a page path cannot have a segment named {seg!r}")


@pytest.mark.parametrize("page", ["/index.html", "/models/", "/assets/"])
def test_build_reports_page_collisions_before_writing(tmp_path, page):
    _one_error(tmp_path, _edit("path: /card/", f"path: {page}"), page, "apps[0].path", "",
               verb="build")
    assert not (tmp_path / "out").exists()
