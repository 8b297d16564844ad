// GPT-2's byte-level alphabet: every byte gets a printable character so that a byte-level
// BPE vocabulary is a vocabulary of ordinary strings (tokenizers' `bytes_char`).

/** @type {string[] | null} */
let byteToCharTable = null;
/** @type {Map<string, number> | null} */
let charToByteTable = null;

function build() {
  const keep = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const kept = new Set(keep);
  /** @type {string[]} */
  const table = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    // Printable bytes map to themselves; the rest to U+0100 upwards, in byte order.
    table[b] = String.fromCodePoint(kept.has(b) ? b : 256 + extra++);
  }
  byteToCharTable = table;
  charToByteTable = new Map(table.map((c, b) => [c, b]));
}

/** @returns {string[]} the character of each byte */
export function byteToChar() {
  if (!byteToCharTable) build();
  return /** @type {string[]} */ (byteToCharTable);
}

/** @returns {Map<string, number>} the byte of each byte-level character */
export function charToByte() {
  if (!charToByteTable) build();
  return /** @type {Map<string, number>} */ (charToByteTable);
}

const encoder = new TextEncoder();

/**
 * A string's UTF-8 bytes spelt in the byte-level alphabet.
 * @param {string} text
 */
export function toByteLevel(text) {
  const table = byteToChar();
  let out = "";
  for (const b of encoder.encode(text)) out += table[b];
  return out;
}
