// Streaming decode (issue 4 item 3): text comes out token by token and never holds half a
// UTF-8 character: bytes of an incomplete character wait in TextDecoder's stream state until
// the token that completes it arrives.

import { stripStart } from "./decoder.js";

/**
 * @typedef {{ push: (id: number) => string, flush: () => string }} StreamingDecoder
 */

/**
 * @param {(id: number, first: boolean) => Uint8Array | null} bytesOf bytes of a token (null: skipped)
 * @param {{ content: string, count: number } | null} strip leading characters to drop from the text
 * @returns {StreamingDecoder}
 */
export function createStreamingDecoder(bytesOf, strip) {
  const utf8 = new TextDecoder("utf-8", { fatal: false });
  let first = true;
  let stripLeft = strip ? strip.count : 0;
  /** @param {string} text */
  const emit = (text) => {
    if (stripLeft > 0 && strip && text.length) {
      const before = text.length;
      const rest = stripStart(text, strip.content, stripLeft);
      const removed = (before - rest.length) / strip.content.length;
      // Stop stripping at the first character that is not the content.
      stripLeft = rest.length ? 0 : stripLeft - removed;
      return rest;
    }
    return text;
  };
  return {
    push(id) {
      const bytes = bytesOf(id, first);
      if (bytes === null) return "";
      first = false;
      return emit(utf8.decode(bytes, { stream: true }));
    },
    flush() {
      return emit(utf8.decode());
    },
  };
}

/**
 * Streamed detokenisation: decode all generated ids and emit what is new,
 * holding back an incomplete UTF-8 sequence (shown as U+FFFD) until the next
 * token completes it. Works with any `decode(ids)`.
 */
export class IncrementalDecoder {
  /** @param {{ decode(ids: number[], opts?: any): string }} tokenizer */
  constructor(tokenizer) {
    this.tokenizer = tokenizer;
    /** @type {number[]} */
    this.ids = [];
    this.emitted = 0;
  }

  /** @param {number} id @returns {string} */
  push(id) {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids, { skipSpecial: true });
    if (text.endsWith("\uFFFD")) return "";
    const out = text.slice(this.emitted);
    this.emitted = text.length;
    return out;
  }

  /** @returns {string} */
  flush() {
    const text = this.tokenizer.decode(this.ids, { skipSpecial: true });
    const out = text.slice(this.emitted);
    this.emitted = text.length;
    return out;
  }
}
