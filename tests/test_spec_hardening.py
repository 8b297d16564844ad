"""Hardening of ``sitegen`` against bad input (issue 11): never a traceback."""

from __future__ import annotations

import pytest

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
