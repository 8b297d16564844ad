// The tokenizer that runs in the browser (issue 4, item 3) over the manifest's `tokenizer`
// data (docs/weights-format.md, "Tokenizer"; written by sitegen/convert/tokenizer.py).
// Pipeline, as in the Hugging Face tokenizers library: added tokens are cut out first, then each
// remaining piece is normalized, pre-tokenized into words, and each word BPE-encoded.

import { InvalidRequestError, ManifestError } from "../errors.js";
import { Bpe } from "./bpe.js";
import { createTokenDecoder } from "./decoder.js";
import { createNormalizer } from "./normalize.js";
import { createPreTokenizer } from "./pretokenize.js";
import { createStreamingDecoder } from "./streaming.js";

export { createStreamingDecoder } from "./streaming.js";

/**
 * @typedef {{ id: number, content: string, special?: boolean, lstrip?: boolean, rstrip?: boolean,
 *   normalized?: boolean, single_word?: boolean }} AddedToken
 * @typedef {import("./bpe.js").BpeData & {
 *   format: string, version: number, model: string,
 *   added_tokens: AddedToken[],
 *   normalizer: import("./normalize.js").PipelineSpec | null,
 *   pre_tokenizer: import("./normalize.js").PipelineSpec | null,
 *   decoder: import("./normalize.js").PipelineSpec | null,
 *   prefix_ids: number[], suffix_ids: number[],
 *   bos_id: number | null, eos_id: number | null, pad_id: number | null,
 * }} TokenizerData
 * @typedef {{ addSpecial?: boolean, parseSpecial?: boolean }} EncodeOptions
 * @typedef {{ skipSpecial?: boolean }} DecodeOptions
 * @typedef {{
 *   encode: (text: string, options?: EncodeOptions) => number[],
 *   decode: (ids: ArrayLike<number>, options?: DecodeOptions) => string,
 *   decoder: (options?: DecodeOptions) => import("./streaming.js").StreamingDecoder,
 *   idToToken: (id: number) => string | undefined,
 *   tokenBytes: (id: number) => Uint8Array | null,
 *   tokenToId: (token: string) => number | undefined,
 *   isSpecial: (id: number) => boolean,
 *   vocabSize: number, bosId: number | null, eosId: number | null, padId: number | null,
 * }} Tokenizer
 */

const FORMAT = "sitegen-tokenizer";
const VERSION = 1;

/** A trie of added tokens over UTF-16 code units; `id` marks the end of a token. */
class Trie {
  constructor() {
    /** @type {Map<number, Trie>} */ this.next = new Map();
    /** @type {AddedToken | null} */ this.token = null;
  }
  /** @param {AddedToken} t */
  add(t) {
    /** @type {Trie} */
    let node = this;
    for (let i = 0; i < t.content.length; i++) {
      const c = t.content.charCodeAt(i);
      let child = node.next.get(c);
      if (!child) { child = new Trie(); node.next.set(c, child); }
      node = child;
    }
    node.token = t;
  }
}

const SPACE = /\p{White_Space}/u;
const WORD = /[\p{L}\p{N}_]/u;

/**
 * Cut `text` at added tokens, leftmost-longest (tokenizers' aho-corasick LeftmostLongest),
 * honouring lstrip/rstrip (swallow neighbouring whitespace) and single_word.
 * @param {string} text
 * @param {Trie} trie
 * @returns {({ id: number } | { text: string, start: number })[]}
 */
function splitAdded(text, trie) {
  /** @type {({ id: number } | { text: string, start: number })[]} */
  const out = [];
  if (!trie.next.size) return text ? [{ text, start: 0 }] : [];
  let done = 0; // text before this index has been emitted
  let i = 0;
  while (i < text.length) {
    /** @type {AddedToken | null} */
    let best = null;
    let bestEnd = i;
    let node = trie.next.get(text.charCodeAt(i));
    for (let j = i + 1; node; j++) {
      if (node.token) { best = node.token; bestEnd = j; }
      if (j >= text.length) break;
      node = node.next.get(text.charCodeAt(j));
    }
    if (!best) { i++; continue; }
    let s = i, e = bestEnd;
    if (best.single_word &&
        ((s > 0 && WORD.test(String.fromCodePoint(/** @type {number} */ (text.codePointAt(s - 1))))) ||
         (e < text.length && WORD.test(String.fromCodePoint(/** @type {number} */ (text.codePointAt(e))))))) {
      i = e;
      continue;
    }
    if (best.lstrip) while (s > done && SPACE.test(text[s - 1])) s--;
    if (best.rstrip) while (e < text.length && SPACE.test(text[e])) e++;
    if (s > done) out.push({ text: text.slice(done, s), start: done });
    out.push({ id: best.id });
    done = i = e;
  }
  if (done < text.length) out.push({ text: text.slice(done), start: done });
  return out;
}

/**
 * @param {TokenizerData} data the manifest's `tokenizer` object
 * @returns {Tokenizer}
 */
export function createTokenizer(data) {
  if (!data || data.format !== FORMAT || data.version !== VERSION) {
    throw new ManifestError(
      `tokenizer: expected format ${JSON.stringify(FORMAT)} version ${VERSION}, got ` +
      `${JSON.stringify(data?.format)} version ${JSON.stringify(data?.version)}; rebuild the site with this sitegen`,
      { format: data?.format, version: data?.version });
  }
  if (data.model !== "bpe") throw new ManifestError(`tokenizer.model: unsupported ${JSON.stringify(data.model)}`);
  const bpe = new Bpe(data);
  const normalize = createNormalizer(data.normalizer);
  const pre = createPreTokenizer(data.pre_tokenizer);
  const tokenDecoder = createTokenDecoder(data.decoder);

  /** @type {Map<number, AddedToken>} */
  const added = new Map(data.added_tokens.map((t) => [t.id, t]));
  /** @param {boolean} parseSpecial */
  const makeTries = (parseSpecial) => {
    const raw = new Trie(), norm = new Trie();
    for (const t of data.added_tokens) {
      if (!parseSpecial && t.special) continue;
      (t.normalized ? norm : raw).add(t);
    }
    return { raw, norm };
  };
  /** @type {Map<boolean, { raw: Trie, norm: Trie }>} */
  const tries = new Map();
  const vocabSize = data.vocab.length;

  /** @param {number} id */
  const tokenOf = (id) => added.get(id)?.content ?? data.vocab[id] ?? undefined;

  /**
   * @param {number} id @param {boolean} first @param {boolean} skipSpecial
   * @returns {Uint8Array | null}
   */
  const bytesOf = (id, first, skipSpecial) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new InvalidRequestError(`tokenizer: token id ${id} is out of range (vocabulary of ${vocabSize})`, { id });
    }
    if (skipSpecial && added.get(id)?.special) return null;
    return tokenDecoder.tokenBytes(/** @type {string} */ (tokenOf(id)), first);
  };

  return {
    encode(text, { addSpecial = false, parseSpecial = true } = {}) {
      let t = tries.get(parseSpecial);
      if (!t) { t = makeTries(parseSpecial); tries.set(parseSpecial, t); }
      /** @type {number[]} */
      const ids = addSpecial ? [...data.prefix_ids] : [];
      for (const seg of splitAdded(text, t.raw)) {
        if ("id" in seg) { ids.push(seg.id); continue; }
        const normalized = normalize(seg.text);
        for (const part of splitAdded(normalized, t.norm)) {
          if ("id" in part) { ids.push(part.id); continue; }
          const pieces = pre.run([{ text: part.text, atStart: seg.start === 0 && part.start === 0 }]);
          for (const p of pieces) if (p.text) for (const id of bpe.encodeWord(p.text)) ids.push(id);
        }
      }
      if (addSpecial) ids.push(...data.suffix_ids);
      return ids;
    },

    decode(ids, { skipSpecial = false } = {}) {
      const d = createStreamingDecoder((id, first) => bytesOf(id, first, skipSpecial), tokenDecoder.strip);
      let text = "";
      for (let i = 0; i < ids.length; i++) text += d.push(ids[i]);
      return text + d.flush();
    },

    decoder({ skipSpecial = false } = {}) {
      return createStreamingDecoder((id, first) => bytesOf(id, first, skipSpecial), tokenDecoder.strip);
    },

    idToToken: tokenOf,
    // The bytes a token adds to the text after the first token (null for special tokens); the
    // token masks of constrained output (runtime/grammar/) are computed over these.
    tokenBytes: (id) => bytesOf(id, false, true),
    tokenToId(token) {
      for (const t of data.added_tokens) if (t.content === token) return t.id;
      return bpe.ids.get(token);
    },
    isSpecial: (id) => Boolean(added.get(id)?.special),
    vocabSize,
    bosId: data.bos_id,
    eosId: data.eos_id,
    padId: data.pad_id,
  };
}
