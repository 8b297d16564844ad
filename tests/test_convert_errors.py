"""Bad inputs (issue 3): each a clear error naming the file and the problem, and no partial OUT."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sitegen.convert import convert
from sitegen.errors import ConvertError
from tiny_models import make_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny("llama", tmp_path_factory.mktemp("src") / "tiny")


@pytest.fixture
def folder(tiny, tmp_path) -> Path:
    f = tmp_path / "model"
    shutil.copytree(tiny, f)
    return f


def _fails(folder: Path, tmp_path: Path, pattern: str, file: Path) -> ConvertError:
    out = tmp_path / "out" / "m"
    with pytest.raises(ConvertError, match=pattern) as e:
        convert(folder, out)
    assert e.value.file == str(file)
    assert str(file) in str(e.value)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no temp folder left
    return e.value


def test_truncated_safetensors(folder, tmp_path):
    st = folder / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[:len(data) - 1000])
    _fails(folder, tmp_path, r"truncated safetensors file: tensor '.*' ends at byte \d+ but the file has", st)


def test_truncated_inside_header(folder, tmp_path):
    st = folder / "model.safetensors"
    st.write_bytes(st.read_bytes()[:5])
    _fails(folder, tmp_path, "truncated safetensors file: shorter than its 8-byte header length", st)


def test_corrupt_header(folder, tmp_path):
    st = folder / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[8:12] = b"\x00{]x"
    st.write_bytes(bytes(data))
    _fails(folder, tmp_path, r"corrupt safetensors header: not valid JSON", st)


def test_header_length_too_large(folder, tmp_path):
    st = folder / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    st.write_bytes(bytes(data))
    _fails(folder, tmp_path, r"corrupt safetensors header: header length \d+ does not fit", st)


def test_unknown_dtype(folder, tmp_path):
    st = folder / "model.safetensors"
    data = st.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = "model.layers.0.mlp.up_proj.weight"
    header[name]["dtype"] = "F8_E4M3"
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    st.write_bytes(struct.pack("<Q", len(h)) + h + data[8 + n:])
    _fails(folder, tmp_path, rf"tensor '{name}' has dtype F8_E4M3 .*supported: F32, F16, BF16", st)


def test_missing_config_key(folder, tmp_path):
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["hidden_size"]
    cfg_path.write_text(json.dumps(cfg))
    _fails(folder, tmp_path, "hidden_size", cfg_path)


def test_bad_config_json(folder, tmp_path):
    cfg_path = folder / "config.json"
    cfg_path.write_text('{"architectures": ["LlamaForCausalLM"],\n "hidden_size": }')
    e = _fails(folder, tmp_path, "not valid JSON", cfg_path)
    assert e.line == 2


def test_unknown_architecture(folder, tmp_path):
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architectures"] = ["FooBarForCausalLM"]
    cfg_path.write_text(json.dumps(cfg))
    e = _fails(folder, tmp_path, "FooBarForCausalLM", cfg_path)
    assert "LlamaForCausalLM" in str(e)  # lists the supported ones


def test_missing_tokenizer(folder, tmp_path):
    (folder / "tokenizer.json").unlink()
    _fails(folder, tmp_path, "missing tokenizer: tokenizer.json not found", folder / "tokenizer.json")


def test_missing_weights(folder, tmp_path):
    (folder / "model.safetensors").unlink()
    _fails(folder, tmp_path, "no weights found: expected model.safetensors or model.safetensors.index.json", folder)


def test_missing_tensor(folder, tmp_path):
    from safetensors.numpy import load_file, save_file

    st = folder / "model.safetensors"
    tensors = load_file(st)
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, st)
    _fails(folder, tmp_path, r"missing tensor\(s\) for LlamaForCausalLM: layers.1.mlp.down.weight", st)


def test_nan_weight(folder, tmp_path):
    from safetensors.numpy import load_file, save_file

    st = folder / "model.safetensors"
    tensors = load_file(st)
    tensors["model.layers.0.self_attn.v_proj.weight"][0, 0] = np.nan
    save_file(tensors, st)
    _fails(folder, tmp_path, "tensor 'layers.0.attn.v.weight' contains NaN or infinite values", st)


def test_source_not_found(tmp_path):
    with pytest.raises(ConvertError, match="model source not found"):
        convert(tmp_path / "nope", tmp_path / "m")


def test_unsupported_file(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ConvertError, match="unsupported model file: expected a Hugging Face folder or a .gguf"):
        convert(tmp_path / "model.bin", tmp_path / "m")


def test_cli_prints_error_without_traceback(folder, tmp_path):
    if not Path(sys.prefix, "bin", "sitegen").exists():
        pytest.fail("the sitegen console script is not installed in the venv")
    (folder / "tokenizer.json").unlink()
    r = subprocess.run([str(Path(sys.prefix, "bin", "sitegen")), "convert", str(folder), "-o", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {folder / 'tokenizer.json'}: missing tokenizer")
    assert "Traceback" not in r.stderr
