// Normalizers: the subset of tokenizers' normalizers that the manifest allows
// (sitegen/convert/tokenizer.py `_normalizer`). They run on each piece of text between
// added tokens, as in tokenizers' AddedVocabulary::extract_and_normalize.

import { ManifestError } from "../errors.js";
import { compileRegex } from "./pretokenize.js";

/**
 * @typedef {{type: string, [key: string]: any}} PipelineSpec
 */

/**
 * @param {PipelineSpec | null} spec
 * @returns {(text: string) => string}
 */
export function createNormalizer(spec) {
  if (!spec) return (s) => s;
  switch (spec.type) {
    case "Sequence": {
      const parts = spec.normalizers.map(createNormalizer);
      return (s) => parts.reduce((acc, f) => f(acc), s);
    }
    case "NFC": case "NFD": case "NFKC": case "NFKD": {
      const form = spec.type;
      return (s) => s.normalize(form);
    }
    case "Lowercase":
      return (s) => s.toLowerCase();
    case "Replace": {
      const content = spec.content;
      if ("String" in spec.pattern) {
        const from = spec.pattern.String;
        return (s) => s.split(from).join(content);
      }
      const re = compileRegex(spec.pattern.Regex);
      return (s) => s.replace(re, () => content);
    }
    case "Prepend": {
      const prefix = spec.prepend;
      // tokenizers prepends only to non-empty text.
      return (s) => (s.length ? prefix + s : s);
    }
    case "Strip": {
      const left = spec.strip_left, right = spec.strip_right;
      return (s) => {
        if (left) s = s.replace(/^\p{White_Space}+/u, "");
        if (right) s = s.replace(/\p{White_Space}+$/u, "");
        return s;
      };
    }
    default:
      throw new ManifestError(`tokenizer.normalizer: unsupported type ${JSON.stringify(spec.type)}`);
  }
}
