// The byte-level matcher of a JSON grammar (issue 17, item 1): a pushdown automaton whose
// stack holds one frame per open JSON value (object, array, string, number, literal), each a
// small immutable state. A state of the matcher is a set of stacks (anyOf and optional parts
// make it nondeterministic); `stepStacks` advances it by one byte. Tokens are byte strings, so a
// token that spans several grammar symbols (`"}`, `,"`, `":"`) is simply several steps, and a
// token that ends inside a UTF-8 character leaves the string frame waiting for its continuation.
//
// Whitespace: at most one space in each gap between the tokens of the JSON text (none before
// the document or after it; no tabs or newlines): a model cannot pad the output forever.

import { ANY_DEPTH, FRAC_DIGITS, INT_DIGITS } from "./schema.js";

/**
 * @typedef {import("./schema.js").Node} Node
 * @typedef {{ k: string, [field: string]: any }} Frame
 * @typedef {{ f: Frame, n: Stack } | null} Stack  null: the document is complete
 */

const SP = 0x20, QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, COLON = 0x3a;
const LBRACE = 0x7b, RBRACE = 0x7d, LBRACKET = 0x5b, RBRACKET = 0x5d;
const NONE = /** @type {Frame[][]} */ ([]);
/** @type {Node} */
const KEY_STRING = { kind: "string", min: 0, max: Infinity, regex: null };
/** @type {Node} */
const FREE_STRING = { kind: "string", min: 0, max: Infinity, regex: null };
/** @type {Node} */
const FREE_NUMBER = { kind: "number", integer: false, lo: null, hi: null, min: null, max: null, exMin: null, exMax: null };
const enc = new TextEncoder();
/** @type {Node} */
const SCALARS = { kind: "literal", alts: [enc.encode("true"), enc.encode("false"), enc.encode("null")] };

/** Free-form values at each depth (json_object, `{}`), built once. @type {Node[][]} */
const anyOptions = [];
/** @param {number} depth @returns {Node[]} */
function anyAt(depth) {
  if (!anyOptions[depth]) {
    /** @type {Node[]} */
    const opts = [FREE_STRING, FREE_NUMBER, SCALARS];
    if (depth < ANY_DEPTH) {
      const inner = /** @type {Node} */ ({ kind: "any", depth: depth + 1 });
      opts.unshift({ kind: "object", props: [], values: inner }, { kind: "array", items: inner, min: 0, max: Infinity });
    }
    anyOptions[depth] = opts;
  }
  return anyOptions[depth];
}

/** The frames a value of `node` starts with (several for anyOf). @param {Node} node @returns {Frame[]} */
function inits(node) {
  switch (node.kind) {
    case "object": return [{ k: "O", node, ph: 0, j: -1, sp: false, live: null, pos: 0 }];
    case "array": return [{ k: "A", node, ph: 0, n: 0, sp: false }];
    case "string": return [{ k: "S", node, ph: 0, len: 0, esc: 0, hex: 0, utf: 0, lead: 0, low: false, re: node.regex ? node.regex.start : null }];
    case "literal": return [{ k: "L", alts: node.alts, pos: 0, live: node.alts.map((_, i) => i), fin: false }];
    case "number": return [{ k: "N", node, t: "" }];
    case "anyOf": return node.options.flatMap(inits);
    default: return anyAt(node.depth).flatMap(inits);
  }
}

/** A value of `node` about to start; `sp`: the one space allowed before it is used up. */
function valueFrame(/** @type {Node} */ node, sp = false) {
  return { k: "V", node, sp };
}

/**
 * Consume byte `b` in frame `f`: each result replaces `f` with a list of frames, top first
 * (an empty list: `f` ended with this byte).
 * @param {Frame} f @param {number} b @returns {Frame[][]}
 */
function advance(f, b) {
  switch (f.k) {
    case "V": {
      if (b === SP && !f.sp) return [[{ ...f, sp: true }]];
      const out = [];
      for (const init of inits(f.node)) for (const r of advance(init, b)) out.push(r);
      return out;
    }
    case "S": return advanceString(f, b);
    case "L": {
      const live = f.live.filter((/** @type {number} */ a) => f.alts[a].length > f.pos && f.alts[a][f.pos] === b);
      if (!live.length) return NONE;
      const pos = f.pos + 1;
      const fin = live.some((/** @type {number} */ a) => f.alts[a].length === pos);
      if (!live.some((/** @type {number} */ a) => f.alts[a].length > pos)) return [[]];
      return [[{ k: "L", alts: f.alts, pos, live, fin }]];
    }
    case "N": {
      const t = f.t + String.fromCharCode(b);
      return numberState(f.node, t).viable ? [[{ k: "N", node: f.node, t }]] : NONE;
    }
    case "O": return advanceObject(f, b);
    case "A": return advanceArray(f, b);
    default: return NONE;
  }
}

/** Whether frame `f` may end here without another byte. @param {Frame} f */
function canFinish(f) {
  if (f.k === "N") return numberState(f.node, f.t).complete;
  if (f.k === "L") return f.fin;
  return false;
}

/** @param {Frame} f @param {number} b @returns {Frame[][]} */
function advanceString(f, b) {
  const node = f.node;
  if (f.ph === 0) return b === QUOTE ? [[{ ...f, ph: 1 }]] : NONE;
  if (f.esc === 1) {
    if (b === 0x75 /* u */) return [[{ ...f, esc: 2, hex: 0 }]];
    return "\"\\/bfnrt".includes(String.fromCharCode(b)) ? [[{ ...f, esc: 0 }]] : NONE;
  }
  if (f.esc >= 2 && f.esc <= 5) {
    // \uXXXX; a high surrogate must be followed by \u and a low one (one character, as maxLength
    // counts it), and no surrogate stands alone.
    const v = hexValue(b);
    if (v < 0) return NONE;
    const hex = f.hex * 16 + v;
    if (f.low) {
      if (f.esc === 2 && v !== 0xd) return NONE;
      if (f.esc === 3 && !(hex >= 0xdc && hex <= 0xdf)) return NONE;
    } else if (f.esc === 3 && hex >= 0xdc && hex <= 0xdf) return NONE;
    if (f.esc === 5) {
      if (!f.low && hex >= 0xd800 && hex <= 0xdbff) return [[{ ...f, esc: 6, hex: 0 }]];
      return [[{ ...f, esc: 0, hex: 0, low: false }]];
    }
    return [[{ ...f, esc: f.esc + 1, hex }]];
  }
  if (f.esc === 6) return b === BACKSLASH ? [[{ ...f, esc: 7 }]] : NONE;
  if (f.esc === 7) return b === 0x75 ? [[{ ...f, esc: 2, hex: 0, low: true }]] : NONE;
  if (f.utf > 0) {
    // Well-formed UTF-8 only (no overlongs, surrogates or code points past U+10FFFF): the
    // second byte's range depends on the lead (f.lead), the others are 80-BF.
    const [lo, hi] = f.lead ? secondByte(f.lead) : [0x80, 0xbf];
    return b >= lo && b <= hi ? [[{ ...f, utf: f.utf - 1, lead: 0 }]] : NONE;
  }
  if (b === QUOTE) {
    if (f.len < node.min || (f.re && !node.regex.accepts(f.re))) return NONE;
    return [[]];
  }
  if (b < 0x20) return NONE;
  const counts = b < 0x80 || b >= 0xc0;
  if (counts && f.len + 1 > node.max) return NONE;
  const len = counts ? f.len + 1 : f.len;
  if (f.re) {
    const re = node.regex.step(f.re, b);
    return re ? [[{ ...f, len, re }]] : NONE;
  }
  if (b === BACKSLASH) return [[{ ...f, len, esc: 1 }]];
  if (b < 0x80) return [[{ ...f, len }]];
  if (b >= 0xc2 && b <= 0xdf) return [[{ ...f, len, utf: 1, lead: b }]];
  if (b >= 0xe0 && b <= 0xef) return [[{ ...f, len, utf: 2, lead: b }]];
  if (b >= 0xf0 && b <= 0xf4) return [[{ ...f, len, utf: 3, lead: b }]];
  return NONE;
}

/** The range of the byte after a UTF-8 lead byte (Unicode table 3-7). @param {number} lead @returns {[number, number]} */
export function secondByte(lead) {
  if (lead === 0xe0) return [0xa0, 0xbf];
  if (lead === 0xed) return [0x80, 0x9f];
  if (lead === 0xf0) return [0x90, 0xbf];
  if (lead === 0xf4) return [0x80, 0x8f];
  return [0x80, 0xbf];
}

/** @param {number} b */
function hexValue(b) {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
}

/**
 * Declared properties that may come after property `j` (-1: none yet): the next ones up to and
 * including the first required one.
 * @param {any} node @param {number} j @returns {number[]}
 */
function nextProps(node, j) {
  const out = [];
  for (let k = j + 1; k < node.props.length; k++) {
    out.push(k);
    if (node.props[k].required) break;
  }
  return out;
}

/** @param {any} node @param {number} j */
function canClose(node, j) {
  for (let k = j + 1; k < node.props.length; k++) if (node.props[k].required) return false;
  return true;
}

// Object phases: 0 before `{`; 1 after `{`; 2 inside a declared key; 3 before `:`; 4 after a
// value; 5 after `,`.
/** @param {Frame} f @param {number} b @returns {Frame[][]} */
function advanceObject(f, b) {
  const node = f.node;
  const free = node.values !== null;
  switch (f.ph) {
    case 0: return b === LBRACE ? [[{ ...f, ph: 1, sp: false }]] : NONE;
    case 1: case 5: {
      if (b === SP && !f.sp) return [[{ ...f, sp: true }]];
      if (b === RBRACE && f.ph === 1 && (free || canClose(node, -1))) return [[]];
      if (free) {
        if (b !== QUOTE) return NONE;
        return [[{ k: "S", node: KEY_STRING, ph: 1, len: 0, esc: 0, hex: 0, utf: 0, lead: 0, low: false, re: null }, { ...f, ph: 3, sp: false }]];
      }
      const live = nextProps(node, f.ph === 1 ? -1 : f.j).filter((k) => node.props[k].bytes[0] === b);
      return live.length ? [[{ ...f, ph: 2, live, pos: 1, sp: false }]] : NONE;
    }
    case 2: {
      const live = f.live.filter((/** @type {number} */ k) => node.props[k].bytes[f.pos] === b);
      if (!live.length) return NONE;
      const done = live.find((/** @type {number} */ k) => node.props[k].bytes.length === f.pos + 1);
      if (done !== undefined) return [[{ ...f, ph: 3, j: done, live: null, pos: 0, sp: false }]];
      return [[{ ...f, live, pos: f.pos + 1 }]];
    }
    case 3:
      if (b === SP && !f.sp) return [[{ ...f, sp: true }]];
      if (b !== COLON) return NONE;
      return [[valueFrame(free ? node.values : node.props[f.j].node), { ...f, ph: 4, sp: false }]];
    case 4:
      if (b === SP && !f.sp) return [[{ ...f, sp: true }]];
      if (b === COMMA && (free || nextProps(node, f.j).length)) return [[{ ...f, ph: 5, sp: false }]];
      if (b === RBRACE && (free || canClose(node, f.j))) return [[]];
      return NONE;
    default: return NONE;
  }
}

// Array phases: 0 before `[`; 1 after `[`; 2 after an item; 3 after `,`.
/** @param {Frame} f @param {number} b @returns {Frame[][]} */
function advanceArray(f, b) {
  const node = f.node;
  switch (f.ph) {
    case 0: return b === LBRACKET ? [[{ ...f, ph: 1, sp: false }]] : NONE;
    case 1: case 3: {
      if (b === SP && !f.sp) return [[{ ...f, sp: true }]];
      if (b === RBRACKET && f.ph === 1 && node.min === 0) return [[]];
      if (f.ph === 1 && node.max === 0) return NONE;
      const after = { ...f, ph: 2, n: f.n + 1, sp: false };
      return advance(valueFrame(node.items, true), b).map((r) => [...r, after]);
    }
    case 2:
      if (b === SP && !f.sp) return [[{ ...f, sp: true }]];
      if (b === COMMA && f.n < node.max) return [[{ ...f, ph: 3, sp: false }]];
      if (b === RBRACKET && f.n >= node.min) return [[]];
      return NONE;
    default: return NONE;
  }
}

const NUMBER_SYNTAX = /^-?(0|[1-9][0-9]*)?(\.[0-9]*)?$/;
/** @type {Map<any, Map<string, { viable: boolean, complete: boolean }>>} */
const numberMemo = new Map();

/**
 * Whether the number text `t` can still become a number of `node` (viable), and whether it is
 * one now (complete). Bounds are checked exactly on the grid of 10^-FRAC_DIGITS (integers: 1):
 * a prefix is viable only if some completion lies within them, so generation never dead-ends.
 * @param {any} node @param {string} t
 */
export function numberState(node, t) {
  let memo = numberMemo.get(node);
  if (!memo) { memo = new Map(); numberMemo.set(node, memo); }
  let r = memo.get(t);
  if (!r) {
    r = computeNumberState(node, t);
    if (memo.size < 50000) memo.set(t, r);
  }
  return r;
}

/** @param {any} node @param {string} t */
function computeNumberState(node, t) {
  const bad = { viable: false, complete: false };
  const m = NUMBER_SYNTAX.exec(t);
  if (!m) return bad;
  const neg = t.startsWith("-");
  const int = m[1] ?? "";
  const frac = m[2] === undefined ? null : m[2].slice(1);
  if (frac !== null && (node.integer || !int)) return bad;
  if (int.length > INT_DIGITS || (frac !== null && frac.length > FRAC_DIGITS)) return bad;
  const S = node.integer ? 0 : FRAC_DIGITS;
  const scale = 10n ** BigInt(S);
  /** @type {[bigint, bigint][]} */
  const spans = [];
  if (!int) {
    const top = 10n ** BigInt(INT_DIGITS) * scale - 1n;
    spans.push([0n, top]);
  } else if (frac === null) {
    const d = BigInt(int);
    if (int === "0") spans.push([0n, scale - 1n]);
    else {
      for (let k = 0; k <= INT_DIGITS - int.length; k++) {
        const p = 10n ** BigInt(k);
        spans.push([d * p * scale, (d + 1n) * p * scale - 1n]);
      }
    }
  } else {
    const f = frac.length;
    const unit = 10n ** BigInt(S - f);
    const v = (BigInt(int) * 10n ** BigInt(f) + (f ? BigInt(frac) : 0n)) * unit;
    spans.push([v, v + unit - 1n]);
  }
  const lo = node.lo, hi = node.hi;
  const viable = spans.some(([a, b]) => {
    const [x, y] = neg ? [-b, -a] : [a, b];
    return (lo === null || y >= lo) && (hi === null || x <= hi);
  });
  if (!viable) return bad;
  let complete = int !== "" && (frac === null || frac.length > 0);
  if (complete) {
    const v = Number(t);
    if (node.min !== null && !(v >= node.min)) complete = false;
    if (node.max !== null && !(v <= node.max)) complete = false;
    if (node.exMin !== null && !(v > node.exMin)) complete = false;
    if (node.exMax !== null && !(v < node.exMax)) complete = false;
  }
  return { viable, complete };
}

/**
 * Advance every stack by byte `b`, appending the results to `out`.
 * @param {Stack[]} stacks @param {number} b @param {Stack[]} out
 */
export function stepStacks(stacks, b, out) {
  for (let s of stacks) {
    while (s) {
      const reps = advance(s.f, b);
      for (const rep of reps) {
        let t = s.n;
        for (let i = rep.length - 1; i >= 0; i--) t = { f: rep[i], n: t };
        out.push(t);
      }
      if (!canFinish(s.f)) break;
      s = s.n;
    }
  }
  return out;
}

/** Whether a stack may end the document here. @param {Stack} s */
export function accepting(s) {
  for (; s; s = s.n) if (!canFinish(s.f)) return false;
  return true;
}

/** The initial stacks of a document of `node` (no leading space). @param {Node} node @returns {Stack[]} */
export function initialStacks(node) {
  return [{ f: valueFrame(node, true), n: null }];
}

/** Top frame is an unconstrained string between characters: every plain token fits. @param {Stack} s */
export function plainStringTop(s) {
  const f = s?.f;
  return f && f.k === "S" && f.ph === 1 && f.esc === 0 && f.utf === 0 && f.re === null ? f : null;
}

/** @type {WeakMap<object, number>} */
const ids = new WeakMap();
let nextId = 0;
/** @param {object} o */
const idOf = (o) => {
  let i = ids.get(o);
  if (i === undefined) { i = nextId++; ids.set(o, i); }
  return i;
};

/** A string naming a stack exactly (the mask cache's key). @param {Stack} s */
export function stackKey(s) {
  let key = "";
  for (; s; s = s.n) {
    const f = s.f;
    switch (f.k) {
      case "V": key += `V${idOf(f.node)}${f.sp ? "s" : ""}|`; break;
      case "S": key += `S${idOf(f.node)}.${f.ph}.${f.len}.${f.esc}.${f.hex}.${f.utf}.${f.lead}.${f.low ? 1 : 0}.${f.re ? f.re.join(",") : ""}|`; break;
      case "L": key += `L${idOf(f.alts)}.${f.pos}.${f.live.join(",")}.${f.fin}|`; break;
      case "N": key += `N${idOf(f.node)}.${f.t}|`; break;
      case "O": key += `O${idOf(f.node)}.${f.ph}.${f.j}.${f.sp}.${f.pos}.${f.live ? f.live.join(",") : ""}|`; break;
      case "A": key += `A${idOf(f.node)}.${f.ph}.${f.n}.${f.sp}|`; break;
      default: key += "?|";
    }
  }
  return key || "done";
}
