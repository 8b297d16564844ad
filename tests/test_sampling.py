"""runtime/sampling.js against transformers' logits processors (the oracle).

The JS functions run under Node through a small driver that reads a JSON job
on stdin; each test compares with what transformers computes on the same logits.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
import * as s from "./runtime/sampling.js";
let input = "";
for await (const chunk of process.stdin) input += chunk;
const job = JSON.parse(input);
const out = [];
for (const c of job.cases) {
  try {
    const params = s.resolveSamplingParams(c.params);
    const logits = Float32Array.from(c.logits);
    const pen = s.applyRepetitionPenalty(logits, c.seen ?? [], params.repetitionPenalty);
    const r = { penalised: Array.from(pen) };
    if (params.temperature > 0) {
      const d = s.candidateDistribution(pen, params);
      r.ids = Array.from(d.ids); r.probs = Array.from(d.probs);
    }
    if (c.draws) {
      const rng = s.createRng(c.seed);
      r.samples = [];
      for (let i = 0; i < c.draws; i++) r.samples.push(s.sampleToken(logits, params, rng, c.seen ?? []));
    }
    if (c.rng) { const rng = s.createRng(c.seed); r.uniforms = Array.from({length: c.rng}, rng); }
    out.push(r);
  } catch (e) { out.push({ error: { name: e.name, message: e.message } }); }
}
console.log(JSON.stringify(out));
"""


def _run(cases: list[dict]) -> list[dict]:
    proc = subprocess.run(["node", "--input-type=module", "-e", DRIVER], input=json.dumps({"cases": cases}),
                          capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(proc.stdout)


def _hf_probs(logits: np.ndarray, seen: list[int], *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
              repetition_penalty=1.0) -> np.ndarray:
    """The distribution transformers' generate() samples from, processors in its order."""
    ids = torch.tensor([seen or [0]], dtype=torch.long)
    scores = torch.tensor(logits[None, :], dtype=torch.float64)
    procs = []
    if repetition_penalty != 1.0 and seen:
        procs.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    if min_p:
        procs.append(MinPLogitsWarper(min_p))
    for p in procs:
        scores = p(ids, scores)
    return torch.softmax(scores, dim=-1)[0].numpy()


SETTINGS = [
    dict(temperature=1.0),
    dict(temperature=0.7),
    dict(temperature=1.3, top_k=5),
    dict(temperature=0.8, top_p=0.9),
    dict(temperature=1.0, top_p=0.5, top_k=40),
    dict(temperature=1.0, min_p=0.1),
    dict(temperature=0.6, top_k=20, top_p=0.95, min_p=0.05),
    dict(temperature=1.0, repetition_penalty=1.3),
    dict(temperature=0.9, repetition_penalty=0.8, top_p=0.8),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_distribution_matches_transformers(setting):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(200) * 3).astype(np.float32)
    seen = [3, 7, 7, 150, int(np.argmax(logits))]
    params = {k: v for k, v in setting.items()}
    [out] = _run([{"logits": logits.tolist(), "seen": seen, "params": params}])
    expected = _hf_probs(logits.astype(np.float64), seen, **setting)
    got = np.zeros_like(expected)
    got[out["ids"]] = out["probs"]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # The candidates come most likely first.
    assert out["probs"] == sorted(out["probs"], reverse=True)


def test_repetition_penalty_matches_transformers():
    logits = np.array([2.0, -1.0, 0.5, -3.0, 4.0], dtype=np.float32)
    seen = [1, 2, 2, 4]
    [out] = _run([{"logits": logits.tolist(), "seen": seen, "params": {"temperature": 0, "repetition_penalty": 1.5}}])
    expected = RepetitionPenaltyLogitsProcessor(1.5)(torch.tensor([seen]), torch.tensor(logits[None]))[0].numpy()
    np.testing.assert_allclose(out["penalised"], expected, rtol=1e-6)


def _mulberry32(seed: int, n: int) -> list[float]:
    """numpy twin of createRng, so a seeded run is reproducible outside JS."""
    a = seed & 0xFFFFFFFF
    out = []
    m = 0xFFFFFFFF
    for _ in range(n):
        a = (a + 0x6D2B79F5) & m
        t = a
        t = ((t ^ (t >> 15)) * (t | 1)) & m
        t = (t ^ (t + (((t ^ (t >> 7)) * (t | 61)) & m))) & m
        out.append(((t ^ (t >> 14)) & m) / 4294967296)
    return out


def test_seeded_rng_is_mulberry32():
    [out] = _run([{"logits": [0.0], "params": {"temperature": 0}, "seed": 1234, "rng": 50}])
    assert out["uniforms"] == _mulberry32(1234, 50)
    assert len(set(out["uniforms"])) == 50 and all(0 <= u < 1 for u in out["uniforms"])


def test_seeded_samples_follow_the_distribution():
    """5000 seeded draws: empirical frequencies match transformers' probabilities."""
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal(50) * 2).astype(np.float32)
    setting = dict(temperature=0.8, top_k=10, top_p=0.9)
    cases = [{"logits": logits.tolist(), "params": setting, "seed": 7, "draws": 5000},
             {"logits": logits.tolist(), "params": setting, "seed": 7, "draws": 20},
             {"logits": logits.tolist(), "params": setting, "seed": 8, "draws": 20}]
    a, b, c = _run(cases)
    expected = _hf_probs(logits.astype(np.float64), [], **setting)
    freq = np.bincount(a["samples"], minlength=50) / 5000
    # 5 standard deviations of a binomial proportion: a generous but real bound.
    bound = 5 * np.sqrt(expected * (1 - expected) / 5000) + 1e-9
    assert np.all(np.abs(freq - expected) <= bound), (freq, expected)
    assert set(a["samples"]) <= set(np.flatnonzero(expected > 0))
    assert b["samples"] == a["samples"][:20]  # same seed, same tokens
    assert c["samples"] != b["samples"]


def test_greedy_is_argmax_after_penalty():
    logits = [1.0, 5.0, 4.9, -2.0]
    [plain, pen] = _run([{"logits": logits, "params": {"temperature": 0}, "draws": 3, "seed": 0},
                         {"logits": logits, "seen": [1], "params": {"temperature": 0, "repetition_penalty": 1.1},
                          "draws": 1, "seed": 0}])
    assert plain["samples"] == [1, 1, 1]
    assert pen["samples"] == [2]  # 5.0/1.1 < 4.9


@pytest.mark.parametrize("param,value,message", [
    ("temperature", -1, "temperature: expected a number >= 0 (0 = greedy), got -1."),
    ("top_p", 0, "top_p: expected a number in (0, 1] (1 = off), got 0."),
    ("top_k", 2.5, "top_k: expected an integer >= 0 (0 = off), got 2.5."),
    ("min_p", 2, "min_p: expected a number in [0, 1] (0 = off), got 2."),
    ("repetition_penalty", 0, "repetition_penalty: expected a number > 0 (1 = off), got 0."),
])
def test_bad_parameters_name_the_parameter(param, value, message):
    [out] = _run([{"logits": [0.0], "params": {param: value}}])
    assert out["error"] == {"name": "InvalidRequestError", "message": message}
