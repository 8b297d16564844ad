"""Tensor groups (format version 2, docs/weights-format.md#tensor-groups).

Matrices that the same activation feeds — a layer's q, k and v projections, a gated MLP's gate and
up projections — are stored as one contiguous tensor: their rows end to end, one ``q`` plane and one
``scales`` plane for all of them. A backend can then run them as one matvec (one pass over ``x``,
one dispatch), and one that cannot still reads each member as a row range of the group.
Quantization groups run along a row, so a group's codes and scales are exactly its members'
codes and scales concatenated: grouping changes where bytes lie, never their values.

The manifest keeps every member in ``tensors`` (name, shape, dtype, planes pointing into the
group's bytes, its own ``quant_error``) with ``group`` and ``group_row`` added, so a reader that
ignores groups still finds every canonical tensor; ``groups`` lists the physical tensors.
"""

from __future__ import annotations

__all__ = ["weight_groups"]


def weight_groups(config: dict) -> dict[str, list[str]]:
    """Group name → its members in row order, for the normalised ``config``."""
    out: dict[str, list[str]] = {}
    for i in range(config["num_layers"]):
        p = f"layers.{i}."
        qkv = [f"{p}attn.{x}" for x in "qkv"]
        out[f"{p}attn.qkv.weight"] = [f"{n}.weight" for n in qkv]
        if all(config["attn_bias"][x] for x in "qkv"):
            out[f"{p}attn.qkv.bias"] = [f"{n}.bias" for n in qkv]
        sparse = bool(config.get("moe")) and i in config["moe"]["layers"]  # experts: no dense gate/up
        if config["mlp_gated"] and not sparse:
            gate_up = [f"{p}mlp.gate", f"{p}mlp.up"]
            out[f"{p}mlp.gate_up.weight"] = [f"{n}.weight" for n in gate_up]
            if config["mlp_bias"]:
                out[f"{p}mlp.gate_up.bias"] = [f"{n}.bias" for n in gate_up]
    return out
