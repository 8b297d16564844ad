// The one JS reader of a converted model's manifest.json (issue 10, item 4).
// The contract is docs/manifest.schema.json (the converter's output is validated
// against it in tests/test_manifest_schema.py); this module checks what the
// runtime relies on once, when a model is opened, and gives the rest of the
// runtime its types instead of `any`. The Python twin is sitegen/convert/manifest.py.

import { ManifestError } from "./errors.js";

/** The format and the version the converter writes; READABLE_VERSIONS are those this runtime reads
 * (version 1 is version 2 without tensor groups). */
export const FORMAT = "sitegen-weights";
export const FORMAT_VERSION = 2;
export const READABLE_VERSIONS = [1, 2];

/**
 * @typedef {"f32" | "f16" | "q8" | "q4"} StorageType
 * @typedef {{ name: "data" | "q" | "scales", offset: number, nbytes: number }} Plane
 * @typedef {{ name: string, shape: number[], dtype: StorageType, group_size?: number, shard: number,
 *   offset: number, nbytes: number, planes: Plane[], quant_error?: { max_abs: number, rel_rms: number },
 *   group?: string, group_row?: number }} TensorEntry
 *   A tensor with `group` is a member of a tensor group: its rows are rows group_row.. of that group's bytes.
 * @typedef {TensorEntry & { members: string[] }} GroupEntry
 *   A tensor group (docs/weights-format.md#tensor-groups): one physical tensor, its members' rows end to end.
 * @typedef {{ file: string, bytes: number, sha256: string }} ShardEntry
 * @typedef {{ features: string[], optional_features: string[], max_buffer_bytes: number,
 *   max_binding_bytes: number, weights_bytes: number, weights_bytes_per_token?: number,
 *   kv_cache_bytes_per_1k_tokens: number,
 *   kv_cache_sliding?: { layers: number, window: number, bytes_per_position: number } }} Requirements
 * @typedef {object} NormalizedConfig  docs/internals.md#normalised-config-manifest-config
 * @property {string} architecture
 * @property {string} hf_architecture
 * @property {number} vocab_size
 * @property {number} hidden_size
 * @property {number} intermediate_size
 * @property {number} num_layers
 * @property {number} num_heads
 * @property {number} num_kv_heads
 * @property {number} head_dim
 * @property {number} max_position_embeddings
 * @property {"rmsnorm" | "layernorm"} norm_type
 * @property {number} norm_eps
 * @property {"silu" | "gelu_tanh" | "gelu"} activation
 * @property {boolean} mlp_gated
 * @property {"rope" | "learned"} position
 * @property {number | null} rope_theta
 * @property {number | null} rope_local_theta
 * @property {number | null} rotary_dim
 * @property {{ type: "linear" | "llama3", factor: number, [k: string]: number | string } | null} rope_scaling
 * @property {{ q: boolean, k: boolean, v: boolean, o: boolean }} attn_bias
 * @property {boolean} mlp_bias
 * @property {null | "rmsnorm" | "layernorm" | "layernorm_per_head"} qk_norm
 * @property {number} attn_scale
 * @property {number | null} attn_softcap
 * @property {number | null} final_softcap
 * @property {number | null} sliding_window
 * @property {("full" | "sliding")[]} layer_types
 * @property {boolean} parallel_block
 * @property {boolean} parallel_mlp_norm
 * @property {boolean} sandwich_norm
 * @property {number | null} embed_scale
 * @property {boolean} tie_word_embeddings
 * @property {boolean} lm_head_bias
 * @property {number[]} [nope_layers]  layers that skip RoPE (SmolLM3; absent: none)
 * @property {MoeConfig | null} [moe]  mixture-of-experts MLPs (Mixtral, Qwen3-MoE; absent/null: dense)
 * @typedef {{ num_experts: number, top_k: number, norm_topk_prob: boolean, intermediate_size: number,
 *   layers: number[] }} MoeConfig  the listed layers route each token to top_k of num_experts experts
 * @typedef {object} Manifest
 * @property {"sitegen-weights"} format
 * @property {1 | 2} version
 * @property {string} name
 * @property {NormalizedConfig} config
 * @property {number} shard_size
 * @property {ShardEntry[]} shards
 * @property {TensorEntry[]} tensors
 * @property {GroupEntry[]} [groups]  version 2 (absent in version 1)
 * @property {any} tokenizer        runtime/tokenizer/index.js reads it
 * @property {any} chat_template    runtime/chat.js reads it (null when the model has none)
 * @property {Record<string, any>} generation
 * @property {Requirements} requirements
 */

/**
 * Check a parsed manifest once and return it typed. Throws ManifestError
 * saying what to do (rebuild the site, convert the model again).
 * @param {unknown} json
 * @returns {Manifest}
 */
export function readManifest(json) {
  const m = /** @type {any} */ (json);
  if (!m || typeof m !== "object" || m.format !== FORMAT) {
    throw new ManifestError(`This is not a sitegen model manifest (format is not '${FORMAT}'): ` +
      "convert the model with `sitegen convert`.", { format: m?.format });
  }
  if (!READABLE_VERSIONS.includes(m.version)) {
    throw new ManifestError(`The model manifest has version ${m.version}; this runtime reads versions ` +
      `${READABLE_VERSIONS.join(", ")}: rebuild the site with a matching sitegen.`, { version: m.version });
  }
  for (const key of ["config", "shards", "tensors", "shard_size"]) {
    if (m[key] == null) throw new ManifestError(`The model manifest has no '${key}': convert the model again.`, { key });
  }
  if (!Array.isArray(m.shards) || !Array.isArray(m.tensors) || typeof m.config !== "object") {
    throw new ManifestError("The model manifest's 'shards', 'tensors' or 'config' has the wrong type: convert the model again.", {});
  }
  for (const key of ["vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"]) {
    const v = m.config[key];
    if (!Number.isInteger(v) || v < 1) {
      throw new ManifestError(`The model manifest's config.${key} is ${JSON.stringify(v)}, not a positive integer: ` +
        "convert the model again.", { key: `config.${key}` });
    }
  }
  const groups = m.groups ?? [];
  if (!Array.isArray(groups)) throw new ManifestError("The model manifest's 'groups' is not a list: convert the model again.", {});
  const names = new Set(groups.map((/** @type {any} */ g) => g.name));
  for (const t of m.tensors) {
    if (t.group !== undefined && !names.has(t.group)) {
      throw new ManifestError(`Tensor ${t.name} names group '${t.group}', which the manifest does not list: ` +
        "convert the model again.", { tensor: t.name });
    }
  }
  return /** @type {Manifest} */ (m);
}

/**
 * The tensors that own their bytes: tensors in no group, then the groups.
 * @param {{ tensors: TensorEntry[], groups?: GroupEntry[] }} m
 * @returns {(TensorEntry | GroupEntry)[]}
 */
export function physicalTensors(m) {
  return [...m.tensors.filter((t) => t.group === undefined), ...(m.groups ?? [])];
}
