// `pattern` for simple cases (issue 17, item 1): a regular expression compiled to a byte NFA that
// the string matcher runs between the quotes. The generated string matches the whole pattern
// (so it also satisfies JSON Schema's unanchored search). The dialect: literals, `.`, classes
// `[a-z0-9_]` / `[^...]`, `\d \w \s` (ASCII), escaped punctuation, groups `(...)` `(?:...)`,
// `|`, and `* + ? {n} {n,} {n,m}`; `^` and `$` only at the ends. Characters are printable ASCII
// (plus literal non-ASCII text); `"` and `\` are never generated (JSON would need escapes).
// Anything else (lookaround, backreferences, \b, flags) is an error naming it.

/**
 * @typedef {{ edges: [number, number, number][], eps: number[] }} NfaState  edges: [lo, hi, to]
 * @typedef {{ states: NfaState[], start: number[], accept: number, closure: number[][],
 *   step: (set: number[], byte: number) => number[] | null, accepts: (set: number[]) => boolean }} Nfa
 * @typedef {{ t: "set", on: boolean[] } | { t: "seq", items: Ast[] } | { t: "alt", items: Ast[] }
 *   | { t: "rep", item: Ast, min: number, max: number }} Ast
 */

const MAX_REPEAT = 64;
const encoder = new TextEncoder();

/** Printable ASCII that may appear unescaped in a JSON string. @param {number} c */
const printable = (c) => c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c;

/** @param {(c: number) => boolean} f @returns {Ast} */
function set(f) {
  const on = new Array(128).fill(false);
  for (let c = 0; c < 128; c++) on[c] = printable(c) && f(c);
  return { t: "set", on };
}

const isDigit = (/** @type {number} */ c) => c >= 48 && c <= 57;
const isWord = (/** @type {number} */ c) => isDigit(c) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
const CLASSES = /** @type {Record<string, (c: number) => boolean>} */ ({
  d: isDigit, D: (c) => !isDigit(c), w: isWord, W: (c) => !isWord(c), s: (c) => c === 32, S: (c) => c !== 32,
});

/**
 * @param {string} pattern
 * @returns {Nfa}
 */
export function compileRegex(pattern) {
  let src = pattern;
  if (src.startsWith("^")) src = src.slice(1);
  if (src.endsWith("$") && !src.endsWith("\\$")) src = src.slice(0, -1);
  let i = 0;
  const err = (/** @type {string} */ m) => new Error(`pattern ${JSON.stringify(pattern)}: ${m}`);

  /** @returns {Ast} */
  const alt = () => {
    const items = [seq()];
    while (src[i] === "|") { i++; items.push(seq()); }
    return items.length === 1 ? items[0] : { t: "alt", items };
  };
  /** @returns {Ast} */
  const seq = () => {
    /** @type {Ast[]} */
    const items = [];
    while (i < src.length && src[i] !== "|" && src[i] !== ")") items.push(repeat());
    return { t: "seq", items };
  };
  /** @returns {Ast} */
  const repeat = () => {
    let a = atom();
    for (;;) {
      const c = src[i];
      let min, max;
      if (c === "*") { min = 0; max = Infinity; i++; }
      else if (c === "+") { min = 1; max = Infinity; i++; }
      else if (c === "?") { min = 0; max = 1; i++; }
      else if (c === "{") {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(src.slice(i));
        if (!m) throw err(`'{' at ${i} is not a repeat {n}, {n,} or {n,m}`);
        min = Number(m[1]); max = m[2] ? (m[3] ? Number(m[3]) : Infinity) : min;
        if (max < min) throw err(`repeat {${min},${max}} has max below min`);
        if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) throw err(`repeats above ${MAX_REPEAT} are not supported`);
        i += m[0].length;
      } else return a;
      if (src[i] === "?") i++; // lazy: the same language
      if (src[i] === "+") throw err("possessive quantifiers are not supported");
      a = { t: "rep", item: a, min, max };
    }
  };
  /** @returns {Ast} */
  const atom = () => {
    const c = src[i];
    if (c === "(") {
      i++;
      if (src[i] === "?") {
        if (src[i + 1] !== ":") throw err(`'(?${src[i + 1] ?? ""}' (lookaround, named groups, flags) is not supported`);
        i += 2;
      }
      const a = alt();
      if (src[i] !== ")") throw err("unbalanced '('");
      i++;
      return a;
    }
    if (c === "[") return charClass();
    if (c === ".") { i++; return set(() => true); }
    if (c === "^" || c === "$") throw err(`anchor '${c}' is only supported at the start / end`);
    if (c === "*" || c === "+" || c === "?" || c === "{") throw err(`nothing to repeat before '${c}' at ${i}`);
    if (c === "\\") {
      const e = src[i + 1];
      if (e === undefined) throw err("trailing backslash");
      i += 2;
      if (e in CLASSES) return set(CLASSES[e]);
      if (/[A-Za-z0-9]/.test(e)) throw err(`escape '\\${e}' is not supported`);
      return literal(e);
    }
    i++;
    return literal(/** @type {string} */ (c));
  };
  /** @param {string} ch @returns {Ast} */
  const literal = (ch) => {
    const code = /** @type {number} */ (ch.codePointAt(0));
    if (code < 128) return set((x) => x === code);
    if (ch.length === 1 && code >= 0xd800 && code <= 0xdfff) {
      // a surrogate pair: take the whole character
      const full = src.slice(i - 1, i + 1);
      i++;
      return bytesSeq(full);
    }
    return bytesSeq(ch);
  };
  /** @param {string} text @returns {Ast} */
  const bytesSeq = (text) => ({ t: "seq", items: [...encoder.encode(text)].map((b) => /** @type {Ast} */ ({ t: "set", on: byteOnly(b) })) });
  /** @returns {Ast} */
  const charClass = () => {
    i++;
    let negate = false;
    if (src[i] === "^") { negate = true; i++; }
    const on = new Array(128).fill(false);
    let first = true;
    while (i < src.length && (src[i] !== "]" || first)) {
      first = false;
      /** @returns {number | ((c: number) => boolean)} */
      const one = () => {
        let ch = src[i++];
        if (ch === "\\") {
          ch = src[i++];
          if (ch === undefined) throw err("trailing backslash");
          if (ch in CLASSES) return CLASSES[ch];
          if (/[A-Za-z0-9]/.test(ch)) throw err(`escape '\\${ch}' in a class is not supported`);
        }
        const code = /** @type {number} */ (ch.codePointAt(0));
        if (code >= 128) throw err("non-ASCII characters in a class are not supported");
        return code;
      };
      const a = one();
      if (typeof a === "function") { for (let x = 0; x < 128; x++) if (a(x)) on[x] = true; continue; }
      if (src[i] === "-" && src[i + 1] !== "]" && i + 1 < src.length) {
        i++;
        const b = one();
        if (typeof b === "function" || b < a) throw err(`bad range in a class at ${i}`);
        for (let x = a; x <= b; x++) on[x] = true;
      } else on[a] = true;
    }
    if (src[i] !== "]") throw err("unbalanced '['");
    i++;
    return set((x) => on[x] !== negate);
  };

  const ast = alt();
  if (i < src.length) throw err(`unbalanced ')' at ${i}`);
  return buildNfa(ast);
}

/** @param {number} b */
function byteOnly(b) {
  // Sets over bytes >= 128 (UTF-8 of literal text) are kept as a 256-entry table.
  const on = new Array(256).fill(false);
  on[b] = true;
  return on;
}

/** Thompson construction, then epsilon closures. @param {Ast} ast @returns {Nfa} */
function buildNfa(ast) {
  /** @type {NfaState[]} */
  const states = [];
  const add = () => { states.push({ edges: [], eps: [] }); return states.length - 1; };
  /** @param {Ast} a @returns {[number, number]} */
  const build = (a) => {
    const s = add(), e = add();
    if (a.t === "set") {
      for (let c = 0; c < a.on.length; c++) {
        if (!a.on[c]) continue;
        let d = c;
        while (d + 1 < a.on.length && a.on[d + 1]) d++;
        states[s].edges.push([c, d, e]);
        c = d;
      }
    } else if (a.t === "seq") {
      let cur = s;
      for (const item of a.items) { const [is, ie] = build(item); states[cur].eps.push(is); cur = ie; }
      states[cur].eps.push(e);
    } else if (a.t === "alt") {
      for (const item of a.items) { const [is, ie] = build(item); states[s].eps.push(is); states[ie].eps.push(e); }
    } else {
      let cur = s;
      for (let k = 0; k < a.min; k++) { const [is, ie] = build(a.item); states[cur].eps.push(is); cur = ie; }
      if (a.max === Infinity) {
        const [is, ie] = build(a.item);
        states[cur].eps.push(is, e);
        states[ie].eps.push(is, e);
      } else {
        for (let k = a.min; k < a.max; k++) { const [is, ie] = build(a.item); states[cur].eps.push(is, e); cur = ie; }
      }
      states[cur].eps.push(e);
    }
    return [s, e];
  };
  const [start, accept] = build(ast);
  const closure = states.map((_, i) => {
    const seen = new Set([i]);
    const todo = [i];
    while (todo.length) for (const j of states[/** @type {number} */ (todo.pop())].eps) if (!seen.has(j)) { seen.add(j); todo.push(j); }
    return [...seen].sort((x, y) => x - y);
  });
  /** @type {Map<string, number[] | null>} */
  const memo = new Map();
  return {
    states, start: closure[start], accept, closure,
    step(set, byte) {
      const key = `${set.join(",")}:${byte}`;
      const hit = memo.get(key);
      if (hit !== undefined) return hit;
      const out = new Set();
      for (const st of set) for (const [lo, hi, to] of states[st].edges) if (byte >= lo && byte <= hi) for (const c of closure[to]) out.add(c);
      const r = out.size ? [...out].sort((x, y) => x - y) : null;
      if (memo.size < 100000) memo.set(key, r);
      return r;
    },
    accepts: (set) => set.includes(accept),
  };
}
