// Pre-tokenizers: cut normalized text into words that BPE encodes one by one. The subset of
// tokenizers' pre-tokenizers the manifest allows (sitegen/convert/tokenizer.py `_pre_tokenizer`).
// Regexes arrive already rewritten by the converter into a dialect that Oniguruma and
// ECMAScript (u flag) read alike (no inline modifiers, \p{White_Space} for \s, ...).

import { ManifestError } from "../errors.js";
import { toByteLevel } from "./bytelevel.js";

/**
 * One piece of text during pre-tokenization. `atStart`: it begins at offset 0 of the input
 * (Metaspace's prepend_scheme "first" only prepends there).
 * @typedef {{ text: string, atStart: boolean }} Piece
 */

/** GPT-2's pattern, used by a ByteLevel pre-tokenizer with use_regex (already in the common dialect). */
const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+" +
  "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

/**
 * @param {string} source
 * @returns {RegExp}
 */
export function compileRegex(source) {
  try {
    return new RegExp(source, "gu");
  } catch (e) {
    throw new ManifestError(`tokenizer: regex ${JSON.stringify(source)} does not compile: ${/** @type {Error} */ (e).message}`);
  }
}

/**
 * Match spans of `pattern` in `text`, as [start, end) pairs, skipping empty matches.
 * @param {string} text
 * @param {RegExp | string} pattern
 * @returns {number[]}
 */
function findMatches(text, pattern) {
  /** @type {number[]} */
  const spans = [];
  if (typeof pattern === "string") {
    if (!pattern.length) return spans;
    let i = text.indexOf(pattern);
    while (i >= 0) {
      spans.push(i, i + pattern.length);
      i = text.indexOf(pattern, i + pattern.length);
    }
    return spans;
  }
  pattern.lastIndex = 0;
  for (const m of text.matchAll(pattern)) {
    if (m[0].length) spans.push(/** @type {number} */ (m.index), /** @type {number} */ (m.index) + m[0].length);
  }
  return spans;
}

/**
 * Split like tokenizers' `NormalizedString::split(pattern, behavior)`.
 * @param {Piece} piece
 * @param {RegExp | string} pattern
 * @param {string} behavior
 * @returns {Piece[]}
 */
function splitPiece(piece, pattern, behavior) {
  const { text } = piece;
  const spans = findMatches(text, pattern);
  if (!spans.length) return [piece];
  /** @type {number[]} cut points (piece boundaries) */
  const cuts = [0];
  /** @type {boolean[]} whether the piece after each cut is kept */
  const keep = [];
  /** @param {number} at @param {boolean} kept */
  const cut = (at, kept) => { cuts.push(at); keep.push(kept); };
  let prev = 0;
  for (let k = 0; k < spans.length; k += 2) {
    const s = spans[k], e = spans[k + 1];
    switch (behavior) {
      case "Isolated":
      case "Removed":
        if (s > prev) cut(s, true);
        cut(e, behavior === "Isolated");
        break;
      case "Contiguous":
        if (s > prev) cut(s, true);
        else if (k > 0) { cuts.pop(); keep.pop(); } // glue to the previous match
        cut(e, true);
        break;
      case "MergedWithPrevious":
        cut(e, true);
        break;
      case "MergedWithNext":
        if (s > 0) cut(s, true);
        break;
      default:
        throw new ManifestError(`tokenizer.pre_tokenizer: unsupported Split behavior ${JSON.stringify(behavior)}`);
    }
    prev = e;
  }
  if (cuts[cuts.length - 1] < text.length) cut(text.length, true);
  /** @type {Piece[]} */
  const out = [];
  for (let k = 0; k + 1 < cuts.length; k++) {
    const s = cuts[k], e = cuts[k + 1];
    if (e > s && keep[k]) out.push({ text: text.slice(s, e), atStart: piece.atStart && s === 0 });
  }
  return out;
}

/**
 * @typedef {import("./normalize.js").PipelineSpec} PipelineSpec
 * @typedef {(pieces: Piece[]) => Piece[]} PreTokenizer
 */

/**
 * @param {PipelineSpec | null} spec
 * @returns {{ run: PreTokenizer, byteLevel: boolean }}
 */
export function createPreTokenizer(spec) {
  if (!spec) return { run: (p) => p, byteLevel: false };
  switch (spec.type) {
    case "Sequence": {
      const parts = spec.pretokenizers.map(createPreTokenizer);
      return {
        run: (pieces) => parts.reduce((acc, p) => p.run(acc), pieces),
        byteLevel: parts.some((p) => p.byteLevel),
      };
    }
    case "Split": {
      const pattern = "String" in spec.pattern ? spec.pattern.String : compileRegex(spec.pattern.Regex);
      const behavior = spec.behavior;
      return { run: (pieces) => pieces.flatMap((p) => splitPiece(p, pattern, behavior)), byteLevel: false };
    }
    case "ByteLevel": {
      const re = spec.use_regex ? compileRegex(GPT2_PATTERN) : null;
      const addPrefix = spec.add_prefix_space;
      return {
        run: (pieces) => pieces.flatMap((p) => {
          if (addPrefix && !p.text.startsWith(" ")) p = { text: " " + p.text, atStart: p.atStart };
          const parts = re ? splitPiece(p, re, "Isolated") : [p];
          return parts.map((q) => ({ text: toByteLevel(q.text), atStart: q.atStart }));
        }),
        byteLevel: true,
      };
    }
    case "Metaspace": {
      const rep = spec.replacement, scheme = spec.prepend_scheme, split = spec.split;
      return {
        run: (pieces) => pieces.flatMap((p) => {
          let text = p.text.split(" ").join(rep);
          if (!text.startsWith(rep) && (scheme === "always" || (scheme === "first" && p.atStart))) text = rep + text;
          const q = { text, atStart: p.atStart };
          return split ? splitPiece(q, rep, "MergedWithNext") : [q];
        }),
        byteLevel: false,
      };
    }
    default:
      throw new ManifestError(`tokenizer.pre_tokenizer: unsupported type ${JSON.stringify(spec.type)}`);
  }
}
