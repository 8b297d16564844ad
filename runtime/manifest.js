// The one JS reader of a converted model's manifest.json (issue 10, item 4).
// The contract is docs/manifest.schema.json (the converter's output is validated
// against it in tests/test_manifest_schema.py); this module checks what the
// runtime relies on once, when a model is opened, and gives the rest of the
// runtime its types instead of `any`. The Python twin is sitegen/convert/manifest.py.

import { ManifestError } from "./errors.js";

/** The format and version this runtime reads. */
export const FORMAT = "sitegen-weights";
export const FORMAT_VERSION = 1;

/**
 * @typedef {"f32" | "f16" | "q8" | "q4"} StorageType
 * @typedef {{ name: "data" | "q" | "scales", offset: number, nbytes: number }} Plane
 * @typedef {{ name: string, shape: number[], dtype: StorageType, group_size?: number, shard: number,
 *   offset: number, nbytes: number, planes: Plane[], quant_error?: { max_abs: number, rel_rms: number } }} TensorEntry
 * @typedef {{ file: string, bytes: number, sha256: string }} ShardEntry
 * @typedef {{ features: string[], optional_features: string[], max_buffer_bytes: number,
 *   max_binding_bytes: number, weights_bytes: number, kv_cache_bytes_per_1k_tokens: number }} Requirements
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
 * @typedef {object} Manifest
 * @property {"sitegen-weights"} format
 * @property {1} version
 * @property {string} name
 * @property {NormalizedConfig} config
 * @property {number} shard_size
 * @property {ShardEntry[]} shards
 * @property {TensorEntry[]} tensors
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
  if (m.version !== FORMAT_VERSION) {
    throw new ManifestError(`The model manifest has version ${m.version}; this runtime reads version ${FORMAT_VERSION}: ` +
      "rebuild the site with a matching sitegen.", { version: m.version });
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
  return /** @type {Manifest} */ (m);
}
