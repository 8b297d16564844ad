// Token sampling on the CPU from one row of logits (issue 4, item 5).
//
// The distribution math follows Hugging Face transformers' logits processors,
// in the order `generate()` applies them: repetition penalty, then
// temperature, top-k, top-p, min-p. Tests compare `candidateDistribution`
// with those processors (tests/test_sampling.py), so "top_p=0.9" means here
// exactly what it means there.

import { InvalidRequestError } from "./errors.js";

/**
 * @typedef {object} SamplingParams
 * @property {number} temperature  0 = greedy (argmax); otherwise logits are divided by it.
 * @property {number} topK         keep the k most likely tokens (0 = off).
 * @property {number} topP         keep the smallest set whose probability is >= topP (1 = off).
 * @property {number} minP         drop tokens less likely than minP * p(most likely) (0 = off).
 * @property {number} repetitionPenalty  HF/CTRL penalty on every token already seen (1 = off).
 */

/** @type {SamplingParams} */
export const DEFAULT_SAMPLING = Object.freeze({
  temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1,
});

/**
 * Check and complete sampling parameters; names the bad parameter.
 * Accepts OpenAI-style snake_case (`top_p`) as well as camelCase.
 * @param {Record<string, unknown>} raw
 * @param {Partial<SamplingParams>} [defaults]  e.g. the manifest's `generation`
 * @returns {SamplingParams}
 */
export function resolveSamplingParams(raw, defaults = {}) {
  /** @param {string} camel @param {string} snake */
  const pick = (camel, snake) => raw[camel] ?? raw[snake] ?? /** @type {any} */ (defaults)[camel] ??
    /** @type {any} */ (DEFAULT_SAMPLING)[camel];
  const p = {
    temperature: pick("temperature", "temperature"),
    topK: pick("topK", "top_k"),
    topP: pick("topP", "top_p"),
    minP: pick("minP", "min_p"),
    repetitionPenalty: pick("repetitionPenalty", "repetition_penalty"),
  };
  /** @param {string} name @param {unknown} v @param {(x: number) => boolean} ok @param {string} want */
  const check = (name, v, ok, want) => {
    if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) {
      throw new InvalidRequestError(`${name}: expected ${want}, got ${JSON.stringify(v)}.`, { param: name, value: v });
    }
  };
  check("temperature", p.temperature, (x) => x >= 0, "a number >= 0 (0 = greedy)");
  check("top_k", p.topK, (x) => x >= 0 && Number.isInteger(x), "an integer >= 0 (0 = off)");
  check("top_p", p.topP, (x) => x > 0 && x <= 1, "a number in (0, 1] (1 = off)");
  check("min_p", p.minP, (x) => x >= 0 && x <= 1, "a number in [0, 1] (0 = off)");
  check("repetition_penalty", p.repetitionPenalty, (x) => x > 0, "a number > 0 (1 = off)");
  return /** @type {SamplingParams} */ (p);
}

/**
 * A small seeded PRNG (mulberry32): uniform floats in [0, 1). Chosen because it
 * is four lines to reproduce in numpy (tests do), and fast enough per token.
 * @param {number} seed  any integer; reduced to 32 bits
 * @returns {() => number}
 */
export function createRng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Index of the largest value (the first one on ties, like numpy/torch).
 * @param {ArrayLike<number>} values
 */
export function argmax(values) {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (values[i] > bestValue) { bestValue = values[i]; best = i; }
  }
  return best;
}

/**
 * HF `RepetitionPenaltyLogitsProcessor`: every token id in `seen` has its
 * logit divided by `penalty` when positive, multiplied when negative.
 * Returns a new array; `logits` is left untouched.
 * @param {Float32Array} logits
 * @param {Iterable<number>} seen  prompt and generated ids (duplicates are fine)
 * @param {number} penalty
 */
export function applyRepetitionPenalty(logits, seen, penalty) {
  const out = new Float32Array(logits);
  if (penalty === 1) return out;
  for (const id of new Set(seen)) {
    if (id < 0 || id >= out.length) continue;
    const v = logits[id];
    out[id] = v < 0 ? v * penalty : v / penalty;
  }
  return out;
}

// Logits further than this below the maximum have probability < e^-50 (~2e-22)
// relative to the best token: skipping them before sorting changes no
// probability visibly and makes sampling over a 256k vocabulary cheap.
const NEGLIGIBLE_LOGIT_GAP = 50;

/**
 * The distribution a sampled token is drawn from, after temperature, top-k,
 * top-p and min-p (in that order, like HF). Greedy (temperature 0) is not
 * handled here: use `argmax`.
 * @param {Float32Array} logits  one row, already penalised
 * @param {SamplingParams} params
 * @returns {{ ids: Int32Array, probs: Float64Array }}  most likely first; probs sum to 1
 */
export function candidateDistribution(logits, params) {
  const t = params.temperature;
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const floor = max - NEGLIGIBLE_LOGIT_GAP * t;
  /** @type {number[]} */
  const cand = [];
  for (let i = 0; i < logits.length; i++) if (logits[i] >= floor && logits[i] > -Infinity) cand.push(i);
  // Stable sort on the scaled logit, descending: ties keep the lower id first.
  cand.sort((a, b) => logits[b] - logits[a] || a - b);
  const scaled = Float64Array.from(cand, (i) => logits[i] / t);
  let n = cand.length;

  // top-k: HF keeps every token whose score is >= the k-th score (ties included).
  if (params.topK > 0 && params.topK < n) {
    const kth = scaled[params.topK - 1];
    let m = params.topK;
    while (m < n && scaled[m] >= kth) m++;
    n = m;
  }
  let probs = softmax(scaled, n);

  // top-p: HF sorts ascending, removes tokens whose cumulative mass (from the
  // least likely) is <= 1 - top_p, and always keeps the most likely one.
  if (params.topP < 1) {
    let cum = 0;
    let m = n;
    for (let j = n - 1; j >= 1; j--) {
      cum += probs[j];
      if (cum <= 1 - params.topP) m = j; else break;
    }
    if (m < n) { n = m; probs = softmax(scaled, n); }
  }

  // min-p: drop tokens with p < min_p * p_max (computed after the filters above).
  if (params.minP > 0) {
    const threshold = params.minP * probs[0];
    let m = 1;
    while (m < n && probs[m] >= threshold) m++;
    if (m < n) { n = m; probs = softmax(scaled, n); }
  }
  return { ids: Int32Array.from(cand.slice(0, n)), probs };
}

/**
 * @param {Float64Array} x  sorted descending
 * @param {number} n  use x[0..n)
 */
function softmax(x, n) {
  const out = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) { out[i] = Math.exp(x[i] - x[0]); sum += out[i]; }
  for (let i = 0; i < n; i++) out[i] /= sum;
  return out;
}

/**
 * Draw from a distribution with one uniform number: the first candidate whose
 * cumulative probability exceeds `u`.
 * @param {{ ids: Int32Array, probs: Float64Array }} dist
 * @param {number} u  in [0, 1)
 */
export function drawFrom(dist, u) {
  let cum = 0;
  for (let i = 0; i < dist.ids.length; i++) {
    cum += dist.probs[i];
    if (u < cum) return dist.ids[i];
  }
  return dist.ids[dist.ids.length - 1];
}

/**
 * Pick the next token.
 * @param {Float32Array} logits  the last position's row
 * @param {SamplingParams} params
 * @param {() => number} rng
 * @param {Iterable<number>} seen  ids for the repetition penalty (prompt + generated)
 */
export function sampleToken(logits, params, rng, seen) {
  const penalised = params.repetitionPenalty === 1 ? logits : applyRepetitionPenalty(logits, seen, params.repetitionPenalty);
  if (params.temperature === 0) return argmax(penalised);
  return drawFrom(candidateDistribution(penalised, params), rng());
}

/**
 * Finds stop strings in streamed text, even when one spans several tokens.
 * Text that might be the start of a stop string is held back until it is
 * known not to be; the stop string itself is never emitted (like OpenAI's `stop`).
 */
export class StopStringMatcher {
  /** @param {string[]} stops */
  constructor(stops) {
    this.stops = stops.filter((s) => s.length > 0);
    this.pending = "";
    this.stopped = false;
  }

  /**
   * Feed the next piece of decoded text.
   * @param {string} piece
   * @returns {{ text: string, stopped: boolean }}  text safe to emit now
   */
  push(piece) {
    if (this.stopped) return { text: "", stopped: true };
    this.pending += piece;
    let first = -1;
    for (const s of this.stops) {
      const at = this.pending.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      const text = this.pending.slice(0, first);
      this.pending = "";
      this.stopped = true;
      return { text, stopped: true };
    }
    const hold = this.#heldBack();
    const text = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { text, stopped: false };
  }

  /** Text still held back, released at the end of generation. */
  flush() {
    const text = this.stopped ? "" : this.pending;
    this.pending = "";
    return text;
  }

  /** Length of the longest suffix of `pending` that is a proper prefix of a stop string. */
  #heldBack() {
    let best = 0;
    for (const s of this.stops) {
      const max = Math.min(s.length - 1, this.pending.length);
      for (let len = max; len > best; len--) {
        if (this.pending.endsWith(s.slice(0, len))) { best = len; break; }
      }
    }
    return best;
  }
}

/**
 * Length of the common prefix of two id sequences (KV-cache reuse: the
 * positions already in the cache that a new prompt shares).
 * @param {ArrayLike<number>} a
 * @param {ArrayLike<number>} b
 */
export function commonPrefixLength(a, b) {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
