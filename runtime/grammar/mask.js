// Per-step token masks over a model's real vocabulary (issue 17, item 1).
//
// The vocabulary is indexed once (TokenIndex): every token's bytes, sorted, with the length of
// the prefix each shares with the one before it. A mask is one walk of that sorted list, which
// is a walk of the token trie: the matcher states after each prefix are kept per depth, a token
// re-uses the states of the prefix it shares with the previous one, and every token under a
// prefix that the grammar rejects is skipped without a step. Inside an unconstrained string
// (most steps of a long answer) the tokens that are plain text (no quote, backslash, control
// character or partial UTF-8) are accepted by their character count alone, from precomputed
// masks, and only the few others are walked. Masks are cached by matcher state.
//
//   const index = TokenIndex.fromTokenizer(tokenizer, { rows: vocabRows, eos: [2] });
//   const m = new GrammarMatcher(compileSchema(schema), index);
//   m.mask()        → Uint32Array, bit i set = id i allowed (EOS only when the JSON is complete)
//   m.accept(id); m.done  (nothing can follow) ; m.complete (the text so far is a whole document)

import { SitegenRuntimeError } from "../errors.js";
import { accepting, initialStacks, plainStringTop, secondByte, stackKey, stepStacks } from "./matcher.js";

/** @typedef {import("./matcher.js").Stack} Stack @typedef {import("./schema.js").Node} Node */

const CACHE_SIZE = 256;

/**
 * A sorted list of token ids with common-prefix lengths, the bytes laid out flat (the walk reads
 * them in order), and for each position the next one with another first byte (a grammar that
 * rejects a first byte skips its whole group in one jump).
 */
class SortedTokens {
  /** @param {number[]} ids @param {(Uint8Array | null)[]} bytes */
  constructor(ids, bytes) {
    ids.sort((a, b) => compareBytes(/** @type {Uint8Array} */ (bytes[a]), /** @type {Uint8Array} */ (bytes[b])));
    const n = ids.length;
    this.ids = Int32Array.from(ids);
    this.lcp = new Int32Array(n);
    this.off = new Int32Array(n + 1);
    let maxLen = 0, total = 0;
    for (let i = 0; i < n; i++) {
      const cur = /** @type {Uint8Array} */ (bytes[ids[i]]);
      this.off[i] = total;
      total += cur.length;
      maxLen = Math.max(maxLen, cur.length);
      if (i === 0) continue;
      const prev = /** @type {Uint8Array} */ (bytes[ids[i - 1]]);
      let l = 0;
      while (l < prev.length && l < cur.length && prev[l] === cur[l]) l++;
      this.lcp[i] = l;
    }
    this.off[n] = total;
    this.flat = new Uint8Array(total);
    for (let i = 0; i < n; i++) this.flat.set(/** @type {Uint8Array} */ (bytes[ids[i]]), this.off[i]);
    this.nextGroup = new Int32Array(n);
    for (let i = n - 1, next = n; i >= 0; i--) {
      this.nextGroup[i] = next;
      if (this.lcp[i] === 0) next = i;
    }
    this.maxLen = maxLen;
  }
}

/** @param {Uint8Array} a @param {Uint8Array} b */
function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * Characters of a token that is plain JSON-string text (no quote, backslash or control
 * character; well-formed UTF-8 that may end inside a character, which counts as one, as the
 * string frame counts it at its lead byte), else -1. Inside a string between characters such a
 * token is always accepted when its characters fit.
 * @param {Uint8Array} t
 */
function plainChars(t) {
  let chars = 0;
  for (let i = 0; i < t.length; i++) {
    const b = t[i];
    if (b === 0x22 || b === 0x5c || b < 0x20) return -1;
    chars++;
    if (b < 0x80) continue;
    const need = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : -1;
    if (need < 0) return -1;
    const [lo, hi] = secondByte(b);
    for (let k = 1; k <= need && i + k < t.length; k++) {
      const c = t[i + k];
      if (k === 1 ? !(c >= lo && c <= hi) : !(c >= 0x80 && c <= 0xbf)) return -1;
    }
    i += need;
  }
  return chars;
}

/** The vocabulary as bytes, indexed for mask walks; build once per tokenizer. */
export class TokenIndex {
  /**
   * @param {(Uint8Array | null)[]} bytes  each id's bytes (null: never generated inside JSON, e.g. special tokens)
   * @param {{ rows?: number, eos?: Iterable<number> }} [o]  rows: the mask's length (the logits row); eos: ids that end generation
   */
  constructor(bytes, { rows = bytes.length, eos = [] } = {}) {
    this.rows = rows;
    this.words = Math.ceil(rows / 32);
    this.bytes = bytes;
    this.eos = [...eos].filter((id) => id >= 0 && id < rows);
    /** @type {number[]} */
    const usable = [];
    /** @type {number[]} */
    const special = [];
    this.plain = new Int32Array(rows).fill(-1);
    for (let id = 0; id < Math.min(rows, bytes.length); id++) {
      const t = bytes[id];
      if (!t || t.length === 0) continue;
      usable.push(id);
      const c = plainChars(t);
      this.plain[id] = c;
      if (c < 0) special.push(id);
    }
    this.all = new SortedTokens(usable, bytes);
    /** Tokens that are not plain string text: the only ones walked inside a string. */
    this.nonPlain = new SortedTokens(special, bytes);
    /** @type {Map<number, Uint32Array>} plain tokens of at most n characters */
    this.plainMasks = new Map();
    this.maxPlain = 0;
    for (const c of this.plain) if (c > this.maxPlain) this.maxPlain = c;
    /** Masks by matcher state, shared by every matcher over this vocabulary. @type {Map<string, Uint32Array>} */
    this.maskCache = new Map();
  }

  /**
   * @param {{ vocabSize: number, tokenBytes?: (id: number) => Uint8Array | null, decode: Function }} tokenizer
   * @param {{ rows?: number, eos?: Iterable<number> }} [o]
   */
  static fromTokenizer(tokenizer, o = {}) {
    const cached = INDEXES.get(tokenizer);
    if (cached && cached.rows === (o.rows ?? tokenizer.vocabSize)) return cached;
    if (typeof tokenizer.tokenBytes !== "function") throw new SitegenRuntimeError("Constrained output needs the tokenizer's tokenBytes().");
    const bytes = [];
    for (let id = 0; id < tokenizer.vocabSize; id++) bytes.push(tokenizer.tokenBytes(id));
    const index = new TokenIndex(bytes, o);
    INDEXES.set(tokenizer, index);
    return index;
  }

  /** Plain tokens of at most `n` characters. @param {number} n */
  plainUpTo(n) {
    const key = Math.min(n, this.maxPlain);
    let m = this.plainMasks.get(key);
    if (!m) {
      m = new Uint32Array(this.words);
      for (let id = 0; id < this.plain.length; id++) {
        const c = this.plain[id];
        if (c >= 0 && c <= key) m[id >>> 5] |= 1 << (id & 31);
      }
      this.plainMasks.set(key, m);
    }
    return m;
  }
}

/** @type {WeakMap<object, TokenIndex>} */
const INDEXES = new WeakMap();

/**
 * Set in `mask` every token of `list` whose bytes the matcher accepts from `stacks`.
 * @param {SortedTokens} list @param {Stack[]} stacks @param {Uint32Array} mask
 */
function walk(list, stacks, mask) {
  const { ids, lcp, off, flat, nextGroup } = list;
  const n = ids.length;
  /** @type {Stack[][]} */
  const at = [stacks];
  let valid = 0; // at[0..valid] hold the states of the previous token's prefix
  let failed = false; // the previous token failed at byte `valid`
  for (let i = 0; i < n;) {
    const l = i === 0 ? 0 : lcp[i];
    if (failed && l > valid) {
      // shares the byte that failed: skip it (its whole first-byte group at depth 0)
      i = valid === 0 ? nextGroup[i - 1] : i + 1;
      continue;
    }
    const start = off[i], len = off[i + 1] - start;
    let d = l;
    for (; d < len; d++) {
      const next = stepStacks(at[d], flat[start + d], []);
      if (!next.length) break;
      at[d + 1] = next;
    }
    valid = d;
    failed = d < len;
    if (!failed) { const id = ids[i]; mask[id >>> 5] |= 1 << (id & 31); }
    i++;
  }
}

/** A JSON grammar advanced token by token over one vocabulary. */
export class GrammarMatcher {
  /** @param {Node} grammar @param {TokenIndex} index */
  constructor(grammar, index) {
    this.index = index;
    /** @type {Stack[]} */
    this.stacks = initialStacks(grammar);
    /** @type {Map<string, Uint32Array>} */
    this.cache = index.maskCache;
  }

  /** The text so far is a whole document. */
  get complete() {
    return this.stacks.some(accepting);
  }

  /** Nothing can follow: every state is a finished document. */
  get done() {
    return this.stacks.every((s) => s === null);
  }

  /** The allowed ids now (bit id of word id >> 5); EOS ids only when the document is complete. */
  mask() {
    const key = this.#cacheKey();
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const { index } = this;
    const mask = new Uint32Array(index.words);
    const live = this.stacks.filter((s) => s !== null);
    const str = live.length === 1 ? plainStringTop(live[0]) : null;
    if (str) {
      mask.set(index.plainUpTo(str.node.max - str.len));
      walk(index.nonPlain, live, mask);
    } else if (live.length) {
      walk(index.all, live, mask);
    }
    if (this.complete) for (const id of index.eos) mask[id >>> 5] |= 1 << (id & 31);
    this.cache.set(key, mask);
    if (this.cache.size > CACHE_SIZE) this.cache.delete(/** @type {string} */ (this.cache.keys().next().value));
    return mask;
  }

  /**
   * The state as the mask sees it. Inside a plain string the length matters only through
   * whether the string may close (exactly, below minLength) and the room left, up to the
   * longest token; so the steps of a long string share one cached mask.
   */
  #cacheKey() {
    const live = this.stacks.filter((s) => s !== null);
    const str = live.length === 1 ? plainStringTop(live[0]) : null;
    if (str && live[0]) {
      const room = Math.min(str.node.max - str.len, this.index.all.maxLen);
      const closes = str.len >= str.node.min ? "min" : str.len; // a token may close the string after some characters
      return `PS${stackKey({ f: { ...str, len: 0 }, n: null })}${room}.${closes}|${stackKey(live[0].n)}` +
        (this.stacks.length > live.length ? "‖done" : "");
    }
    return this.stacks.map(stackKey).join("‖");
  }

  /** Whether `id` is allowed now (without computing the whole mask). @param {number} id */
  allows(id) {
    if (this.index.eos.includes(id)) return this.complete;
    const t = this.index.bytes[id];
    if (!t || !t.length) return false;
    return this.#run(t).length > 0;
  }

  /** @param {Uint8Array} t */
  #run(t) {
    let s = this.stacks;
    for (const b of t) {
      s = stepStacks(s, b, []);
      if (!s.length) break;
    }
    return s;
  }

  /**
   * Advance by one generated token (not an EOS id).
   * @param {number} id
   */
  accept(id) {
    const t = this.index.bytes[id];
    const next = t && t.length ? this.#run(t) : [];
    if (!next.length) throw new SitegenRuntimeError(`Constrained output: token ${id} is not allowed here (a mask was not applied).`, { id });
    /** @type {Map<string, Stack>} */
    const seen = new Map();
    for (const s of next) seen.set(stackKey(s), s);
    this.stacks = [...seen.values()];
  }

  /** Advance by raw bytes (tests). @param {Uint8Array} bytes */
  acceptBytes(bytes) {
    const next = this.#run(bytes);
    if (!next.length) return false;
    this.stacks = next;
    return true;
  }
}
