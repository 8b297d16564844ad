// The BPE model over one pre-tokenized word, in its two flavours:
// - merges (GPT-2, Llama 3, Qwen, Gemma's tokenizer.json): the adjacent pair of lowest merge
//   rank merges first, as in tokenizers' `Word::merge_all`;
// - scores (SentencePiece, GGUF "llama"): the adjacent pair whose concatenation is a mergeable
//   vocabulary token of highest score merges first, as in sentencepiece's bpe_model.cc and
//   llama.cpp's llm_tokenizer_spm.
// Ties go to the leftmost pair in both. A binary heap keeps long words (Gemma 3 and
// SentencePiece models encode a whole text as one word) at O(n log n).

/**
 * @typedef {{
 *   vocab: (string | null)[],
 *   merges?: number[],
 *   scores?: (number | null)[],
 *   byte_fallback: boolean,
 *   ignore_merges: boolean,
 *   unk_id: number | null,
 *   fuse_unk: boolean,
 * }} BpeData
 */

const encoder = new TextEncoder();

/** A min-heap of candidate merges keyed by (rank, left position). */
/**
 * A word's symbols as a doubly linked list over positions 0..n-1 (symbol i spans [i, end[i])), merged
 * pairwise in the order a MergeHeap gives: the shared core of rank-based BPE and score-based
 * (SentencePiece) merging, which differ only in how a candidate pair is found and what a merge produces.
 */
class SymbolList {
  /** @param {number} n */
  constructor(n) {
    this.next = new Int32Array(n);
    this.prev = new Int32Array(n);
    this.end = new Int32Array(n);
    for (let i = 0; i < n; i++) { this.next[i] = i + 1 < n ? i + 1 : -1; this.prev[i] = i - 1; this.end[i] = i + 1; }
    this.alive = new Uint8Array(n).fill(1);
  }

  /**
   * Apply the heap's candidates best first; after each merge of l with its right neighbour, `consider`
   * pushes the new pairs on either side.
   * @param {MergeHeap} heap @param {(l: number, r: number) => void} consider
   * @param {(l: number, id: number) => void} [onMerge]  told the merged symbol's id
   */
  mergeAll(heap, consider, onMerge) {
    const { next, prev, end, alive } = this;
    while (heap.size) {
      heap.pop();
      const l = /** @type {number} */ (heap.topLeft), r = /** @type {number} */ (heap.topRight);
      // Skip candidates made stale by earlier merges.
      if (!alive[l] || !alive[r] || next[l] !== r || end[r] !== heap.topRightEnd) continue;
      onMerge?.(l, /** @type {number} */ (heap.topId));
      end[l] = end[r];
      alive[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      if (prev[l] >= 0) consider(prev[l], l);
      if (next[l] >= 0) consider(l, next[l]);
    }
  }
}

class MergeHeap {
  constructor() {
    /** @type {number[]} */ this.rank = [];
    /** @type {number[]} */ this.left = [];
    /** @type {number[]} */ this.right = [];
    /** @type {number[]} */ this.rightEnd = [];
    /** @type {number[]} */ this.id = [];
  }
  get size() { return this.rank.length; }
  /** @param {number} a @param {number} b */
  less(a, b) {
    const ra = this.rank[a], rb = this.rank[b];
    return ra < rb || (ra === rb && this.left[a] < this.left[b]);
  }
  /** @param {number} a @param {number} b */
  swap(a, b) {
    for (const arr of [this.rank, this.left, this.right, this.rightEnd, this.id]) {
      const t = arr[a]; arr[a] = arr[b]; arr[b] = t;
    }
  }
  /** @param {number} rank @param {number} left @param {number} right @param {number} rightEnd @param {number} id */
  push(rank, left, right, rightEnd, id) {
    let i = this.rank.length;
    this.rank.push(rank); this.left.push(left); this.right.push(right); this.rightEnd.push(rightEnd); this.id.push(id);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  /** Removes the top; its fields are left in `top*`. */
  pop() {
    this.topLeft = this.left[0]; this.topRight = this.right[0];
    this.topRightEnd = this.rightEnd[0]; this.topId = this.id[0];
    const last = this.rank.length - 1;
    this.swap(0, last);
    for (const arr of [this.rank, this.left, this.right, this.rightEnd, this.id]) arr.pop();
    let i = 0;
    const n = this.rank.length;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < n && this.less(l, m)) m = l;
      if (r < n && this.less(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }
}

/** An open-addressing hash table from a pair of ids to a rank: no per-entry allocation, so
 * building it for 500k merges is quick, and lookups avoid hashing heap numbers. */
class PairTable {
  /** @param {number} count */
  constructor(count) {
    let cap = 16;
    while (cap < count * 2) cap *= 2;
    this.mask = cap - 1;
    this.a = new Int32Array(cap).fill(-1);
    this.b = new Int32Array(cap);
    this.v = new Int32Array(cap);
  }
  /** @param {number} a @param {number} b */
  slot(a, b) {
    return (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77)) & this.mask;
  }
  /** @param {number} a @param {number} b @param {number} v */
  set(a, b, v) {
    let i = this.slot(a, b);
    while (this.a[i] !== -1 && (this.a[i] !== a || this.b[i] !== b)) i = (i + 1) & this.mask;
    this.a[i] = a; this.b[i] = b; this.v[i] = v;
  }
  /** @param {number} a @param {number} b @returns {number} the value, or -1 */
  get(a, b) {
    let i = this.slot(a, b);
    for (;;) {
      const x = this.a[i];
      if (x === -1) return -1;
      if (x === a && this.b[i] === b) return this.v[i];
      i = (i + 1) & this.mask;
    }
  }
}

export class Bpe {
  /** @param {BpeData} data */
  constructor(data) {
    this.vocab = data.vocab;
    /** @type {Map<string, number>} the model's tokens (not added-only ones) */
    this.ids = new Map();
    data.vocab.forEach((t, i) => { if (t !== null) this.ids.set(t, i); });
    this.byteFallback = data.byte_fallback;
    this.ignoreMerges = data.ignore_merges;
    this.unkId = data.unk_id;
    this.fuseUnk = data.fuse_unk;
    /** @type {number[]} */
    this.byteIds = [];
    if (this.byteFallback) {
      for (let b = 0; b < 256; b++) {
        this.byteIds.push(/** @type {number} */ (this.ids.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`)));
      }
    }
    /** @type {PairTable | null} (left id, right id) -> rank */
    this.ranks = null;
    /** @type {Int32Array | null} rank -> id of the merged token */
    this.mergedId = null;
    /** @type {(number | null)[] | null} */
    this.scores = data.scores ?? null;
    if (data.merges) {
      const m = data.merges;
      this.ranks = new PairTable(m.length / 2);
      // The merged token's id is looked up on first use: 500k string lookups up front would
      // cost Gemma's page a second.
      this.mergedId = new Int32Array(m.length / 2).fill(-1);
      for (let r = 0, k = 0; k < m.length; r++, k += 2) {
        this.ranks.set(m[k], m[k + 1], r);  // a repeated merge keeps its last rank, as in tokenizers' HashMap
      }
    }
    /** @type {Map<string, number[]>} */
    this.cache = new Map();
  }

  /**
   * Id of the token that merging rank `r`'s pair (a, b) makes.
   * @param {number} r @param {number} a @param {number} b
   */
  merged(r, a, b) {
    const mergedId = /** @type {Int32Array} */ (this.mergedId);
    let id = mergedId[r];
    if (id < 0) id = mergedId[r] = /** @type {number} */ (this.ids.get(/** @type {string} */ (this.vocab[a]) + this.vocab[b]));
    return id;
  }

  /**
   * Token ids of one word.
   * @param {string} word
   * @returns {number[]}
   */
  encodeWord(word) {
    const hit = this.cache.get(word);
    if (hit) return hit;
    const ids = this.scores ? this.encodeByScore(word) : this.encodeByRank(word);
    if (word.length <= 256) {
      if (this.cache.size >= 50000) this.cache.clear();
      this.cache.set(word, ids);
    }
    return ids;
  }

  /** @param {string} word */
  encodeByRank(word) {
    if (this.ignoreMerges) {
      const id = this.ids.get(word);
      if (id !== undefined) return [id];
    }
    // Initial symbols: one per character; unknown characters become byte tokens or unk.
    /** @type {number[]} */
    const sym = [];
    let lastUnk = false;
    for (const ch of word) {
      const id = this.ids.get(ch);
      if (id !== undefined) { sym.push(id); lastUnk = false; continue; }
      if (this.byteFallback) {
        for (const b of encoder.encode(ch)) sym.push(this.byteIds[b]);
        lastUnk = false;
        continue;
      }
      if (this.unkId !== null) {
        if (!(this.fuseUnk && lastUnk)) sym.push(this.unkId);
        lastUnk = true;
      }
    }
    const n = sym.length;
    if (n < 2) return sym;
    const ranks = /** @type {PairTable} */ (this.ranks);
    if (n <= 32) {
      // Short words (nearly all of them): a linear scan for the best pair allocates nothing.
      for (;;) {
        let best = -1, bestRank = 0x7fffffff;
        for (let i = 0; i + 1 < sym.length; i++) {
          const r = ranks.get(sym[i], sym[i + 1]);
          if (r >= 0 && r < bestRank) { best = i; bestRank = r; }
        }
        if (best < 0) return sym;
        sym[best] = this.merged(bestRank, sym[best], sym[best + 1]);
        sym.splice(best + 1, 1);
      }
    }
    const list = new SymbolList(n);
    const { next, end } = list;
    const heap = new MergeHeap();
    /** @param {number} l @param {number} r */
    const consider = (l, r) => {
      const rank = ranks.get(sym[l], sym[r]);
      if (rank >= 0) heap.push(rank, l, r, end[r], this.merged(rank, sym[l], sym[r]));
    };
    for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
    list.mergeAll(heap, consider, (l, id) => { sym[l] = id; });
    /** @type {number[]} */
    const out = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }

  /** @param {string} word */
  encodeByScore(word) {
    const chars = Array.from(word);
    const n = chars.length;
    if (!n) return [];
    const off = new Int32Array(n + 1);
    for (let i = 0; i < n; i++) off[i + 1] = off[i] + chars[i].length;
    const scores = /** @type {(number | null)[]} */ (this.scores);
    const list = new SymbolList(n);
    const { next, end } = list;
    const heap = new MergeHeap();
    /** @param {number} l @param {number} r */
    const consider = (l, r) => {
      const id = this.ids.get(word.slice(off[l], off[end[r]]));
      if (id === undefined) return;
      const score = scores[id];
      if (score !== null && score !== undefined) heap.push(-score, l, r, end[r], id);
    };
    for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
    list.mergeAll(heap, consider);
    /** @type {number[]} */
    const out = [];
    let lastUnk = false;
    for (let i = 0; i >= 0; i = next[i]) {
      const piece = word.slice(off[i], off[end[i]]);
      const id = this.ids.get(piece);
      if (id !== undefined) { out.push(id); lastUnk = false; continue; }
      if (this.byteFallback) {
        for (const b of encoder.encode(piece)) out.push(this.byteIds[b]);
        lastUnk = false;
      } else if (this.unkId !== null) {
        if (!(this.fuseUnk && lastUnk)) out.push(this.unkId);
        lastUnk = true;
      }
    }
    return out;
  }
}
