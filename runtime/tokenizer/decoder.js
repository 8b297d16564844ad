// Decoding: every token becomes bytes on its own, so that the whole text is the concatenation
// of its tokens' bytes (modulo a leading-space strip at the very start). That is what lets the
// streaming decoder (streaming.js) emit text token by token without ever splitting a character.
// Implements the subset of tokenizers' decoders that the manifest allows
// (sitegen/convert/tokenizer.py `_decoder`).

import { ManifestError } from "../errors.js";
import { charToByte } from "./bytelevel.js";

/**
 * @typedef {import("./normalize.js").PipelineSpec} PipelineSpec
 * @typedef {{
 *   tokenBytes: (token: string, first: boolean) => Uint8Array,
 *   strip: { content: string, count: number } | null,
 * }} TokenDecoder
 */

const encoder = new TextEncoder();
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * @param {PipelineSpec | null} spec
 * @returns {TokenDecoder}
 */
export function createTokenDecoder(spec) {
  if (!spec) throw new ManifestError("tokenizer.decoder: missing (a BPE tokenizer needs a decoder)");
  const steps = spec.type === "Sequence" ? spec.decoders : [spec];
  if (steps.some((/** @type {PipelineSpec} */ s) => s.type === "ByteLevel")) {
    if (steps.length !== 1) throw new ManifestError("tokenizer.decoder: ByteLevel must be the only decoder");
    const table = charToByte();
    return {
      tokenBytes(token) {
        // tokenizers: a token with a character outside the byte alphabet is kept as UTF-8.
        const out = new Uint8Array(token.length);
        let k = 0;
        for (const ch of token) {
          const b = table.get(ch);
          if (b === undefined) return encoder.encode(token);
          out[k++] = b;
        }
        return out.subarray(0, k);
      },
      strip: null,
    };
  }
  /** @type {((s: string, first: boolean) => string)[]} */
  const perToken = [];
  let byteFallback = false;
  let fused = false;
  /** @type {{ content: string, count: number } | null} */
  let strip = null;
  for (const s of steps) {
    switch (s.type) {
      case "Replace": {
        const from = s.pattern.String, to = s.content;
        perToken.push((t) => t.split(from).join(to));
        break;
      }
      case "ByteFallback":
        if (perToken.length && !steps.slice(0, steps.indexOf(s)).every((/** @type {PipelineSpec} */ x) => x.type === "Replace")) {
          throw new ManifestError("tokenizer.decoder: ByteFallback must come before other decoders but Replace");
        }
        byteFallback = true;
        break;
      case "Fuse":
        fused = true;
        break;
      case "Strip": {
        const content = s.content, count = s.start;
        if (fused) strip = { content, count };  // after Fuse: the start of the whole text
        else perToken.push((t) => stripStart(t, content, count));
        break;
      }
      case "Metaspace": {
        const rep = s.replacement, dropFirst = s.prepend_scheme !== "never";
        // tokenizers drops every replacement character of the first token, and spaces the rest.
        perToken.push((t, first) => t.split(rep).join(first && dropFirst ? "" : " "));
        break;
      }
      default:
        throw new ManifestError(`tokenizer.decoder: unsupported type ${JSON.stringify(s.type)}`);
    }
  }
  return {
    tokenBytes(token, first) {
      if (byteFallback) {
        const m = BYTE_TOKEN.exec(token);
        if (m) return Uint8Array.of(parseInt(m[1], 16));
      }
      let t = token;
      for (const f of perToken) t = f(t, first);
      return encoder.encode(t);
    },
    strip,
  };
}

/**
 * Remove up to `count` leading copies of the character `content`.
 * @param {string} text @param {string} content @param {number} count
 */
export function stripStart(text, content, count) {
  let i = 0;
  while (count > 0 && text.startsWith(content, i)) { i += content.length; count--; }
  return text.slice(i);
}
