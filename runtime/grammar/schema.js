// JSON Schema subset → grammar nodes (issue 17, item 1). The nodes are what the byte-level
// matcher (matcher.js) walks; every keyword outside the subset is an error naming it and its
// path, so a schema is never silently half-enforced.
//
// The subset: type (one or a list, which is anyOf), properties + required (+ additionalProperties,
// which never matters: only declared properties are generated), items + minItems/maxItems,
// enum/const (any JSON values), strings with minLength/maxLength/pattern (pattern: see regex.js),
// numbers and integers with minimum/maximum/exclusiveMinimum/exclusiveMaximum, boolean, null,
// anyOf, and annotations (title, description, default, examples, $schema, $id, $comment).
// `{}` or a missing type is any JSON value.

import { InvalidRequestError } from "../errors.js";
import { compileRegex } from "./regex.js";

/**
 * @typedef {{ key: string, bytes: Uint8Array, node: Node, required: boolean }} Prop
 * @typedef {{ kind: "object", props: Prop[], values: Node | null }
 *   | { kind: "array", items: Node, min: number, max: number }
 *   | { kind: "string", min: number, max: number, regex: import("./regex.js").Nfa | null }
 *   | { kind: "literal", alts: Uint8Array[] }
 *   | { kind: "number", integer: boolean, lo: bigint | null, hi: bigint | null, min: number | null,
 *       max: number | null, exMin: number | null, exMax: number | null }
 *   | { kind: "anyOf", options: Node[] }
 *   | { kind: "any", depth: number }} Node
 */

/**
 * Keywords read by the compiler, per type; the spec validator (sitegen/spec/output.py) mirrors this.
 * @type {Readonly<Record<string, string[]>>}
 */
export const SUPPORTED_KEYWORDS = Object.freeze({
  any: ["type", "enum", "const", "anyOf", "title", "description", "default", "examples", "$schema", "$id", "$comment"],
  object: ["properties", "required", "additionalProperties"],
  array: ["items", "minItems", "maxItems"],
  string: ["minLength", "maxLength", "pattern"],
  number: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"],
  integer: ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"],
  boolean: [],
  null: [],
});

/** Digits a generated number may have: 15 before the point (exact in a double), 6 after. */
export const INT_DIGITS = 15;
export const FRAC_DIGITS = 6;
/** Nesting of free-form values (json_object, `{}`) beyond which only scalars are generated. */
export const ANY_DEPTH = 6;

const encoder = new TextEncoder();
const TYPES = ["object", "array", "string", "number", "integer", "boolean", "null"];

/**
 * @param {string} path @param {string} message
 * @returns {never}
 */
function fail(path, message) {
  throw new InvalidRequestError(`response_format: ${path}: ${message}`, { param: "response_format", path });
}

/**
 * Compile a JSON Schema (the subset above) into grammar nodes.
 * @param {unknown} schema
 * @param {string} [path] where `schema` sits, for messages
 * @returns {Node}
 */
export function compileSchema(schema, path = "schema") {
  if (schema === true) return { kind: "any", depth: 0 };
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) fail(path, "expected a JSON Schema object");
  const s = /** @type {Record<string, any>} */ (schema);
  const types = s.type === undefined ? null : Array.isArray(s.type) ? s.type : [s.type];
  if (types) {
    if (!types.length) fail(`${path}.type`, "expected a type name or a non-empty list of them");
    for (const t of types) if (!TYPES.includes(t)) fail(`${path}.type`, `unknown type ${JSON.stringify(t)} (expected one of ${TYPES.join(", ")})`);
  }
  const allowed = new Set([...SUPPORTED_KEYWORDS.any, ...(types ?? TYPES).flatMap((t) => SUPPORTED_KEYWORDS[t])]);
  for (const k of Object.keys(s)) {
    if (!allowed.has(k)) {
      const where = Object.keys(SUPPORTED_KEYWORDS).filter((t) => t !== "any" && SUPPORTED_KEYWORDS[t].includes(k));
      fail(`${path}.${k}`, where.length && types
        ? `keyword '${k}' does not apply to type ${types.join("/")} (it is for ${where.join("/")})`
        : `unsupported JSON Schema keyword '${k}' (supported: ${[...allowed].filter((x) => !x.startsWith("$")).join(", ")})`);
    }
  }
  if ("const" in s || "enum" in s) {
    const values = "const" in s ? [s.const] : s.enum;
    if (!Array.isArray(values) || !values.length) fail(`${path}.enum`, "expected a non-empty list of values");
    // Each value as compact JSON text; kept only if it also has the schema's type.
    const alts = values.filter((v) => !types || types.some((t) => hasType(v, t))).map((v) => encoder.encode(JSON.stringify(v)));
    if (!alts.length) fail(`${path}.enum`, "no value of the list has the schema's type");
    return { kind: "literal", alts };
  }
  if (s.anyOf !== undefined) {
    if (types) fail(`${path}.anyOf`, "anyOf beside type is not supported: put the type in each option");
    if (!Array.isArray(s.anyOf) || !s.anyOf.length) fail(`${path}.anyOf`, "expected a non-empty list of schemas");
    return { kind: "anyOf", options: s.anyOf.map((o, i) => compileSchema(o, `${path}.anyOf[${i}]`)) };
  }
  if (!types) return { kind: "any", depth: 0 };
  const nodes = types.map((t) => compileType(s, t, path));
  return nodes.length === 1 ? nodes[0] : { kind: "anyOf", options: nodes };
}

/** @param {unknown} v @param {string} t */
function hasType(v, t) {
  switch (t) {
    case "object": return !!v && typeof v === "object" && !Array.isArray(v);
    case "array": return Array.isArray(v);
    case "string": return typeof v === "string";
    case "integer": return Number.isInteger(v);
    case "number": return typeof v === "number";
    case "boolean": return typeof v === "boolean";
    default: return v === null;
  }
}

/**
 * @param {any} v @param {string} path @param {{ min?: number }} [o]
 * @returns {number}
 */
function count(v, path, { min = 0 } = {}) {
  if (!Number.isInteger(v) || v < min) fail(path, `expected an integer >= ${min}, got ${JSON.stringify(v)}`);
  return v;
}

/** @param {Record<string, any>} s @param {string} t @param {string} path @returns {Node} */
function compileType(s, t, path) {
  switch (t) {
    case "object": {
      const props = s.properties ?? {};
      if (typeof props !== "object" || Array.isArray(props)) fail(`${path}.properties`, "expected a mapping of names to schemas");
      const required = s.required ?? [];
      if (!Array.isArray(required) || required.some((r) => typeof r !== "string")) fail(`${path}.required`, "expected a list of property names");
      for (const r of required) if (!(r in props)) fail(`${path}.required`, `'${r}' is required but not in properties`);
      const ap = s.additionalProperties;
      if (ap !== undefined && typeof ap !== "boolean") compileSchema(ap, `${path}.additionalProperties`);
      const list = Object.entries(props).map(([key, sub]) => ({
        key, bytes: encoder.encode(JSON.stringify(key)), node: compileSchema(sub, `${path}.properties.${key}`),
        required: required.includes(key),
      }));
      // No properties: a free-form object whose values follow additionalProperties (any value by default).
      const values = list.length ? null : ap === false ? null : ap && typeof ap === "object" ? compileSchema(ap, `${path}.additionalProperties`) : { kind: "any", depth: 1 };
      return { kind: "object", props: list, values: /** @type {Node | null} */ (values) };
    }
    case "array": {
      const min = s.minItems === undefined ? 0 : count(s.minItems, `${path}.minItems`);
      const max = s.maxItems === undefined ? Infinity : count(s.maxItems, `${path}.maxItems`);
      if (max < min) fail(`${path}.maxItems`, `maxItems (${max}) is below minItems (${min})`);
      if (Array.isArray(s.items)) fail(`${path}.items`, "a list of item schemas (tuple validation) is not supported: use prefixItems-free arrays");
      const items = s.items === undefined ? { kind: "any", depth: 1 } : compileSchema(s.items, `${path}.items`);
      return { kind: "array", items: /** @type {Node} */ (items), min, max };
    }
    case "string": {
      const min = s.minLength === undefined ? 0 : count(s.minLength, `${path}.minLength`);
      const max = s.maxLength === undefined ? Infinity : count(s.maxLength, `${path}.maxLength`);
      if (max < min) fail(`${path}.maxLength`, `maxLength (${max}) is below minLength (${min})`);
      let regex = null;
      if (s.pattern !== undefined) {
        if (typeof s.pattern !== "string") fail(`${path}.pattern`, "expected a regular expression string");
        try {
          regex = compileRegex(s.pattern);
        } catch (e) {
          fail(`${path}.pattern`, /** @type {Error} */ (e).message);
        }
      }
      return { kind: "string", min, max, regex };
    }
    case "number":
    case "integer":
      return numberNode(s, t === "integer", path);
    case "boolean":
      return { kind: "literal", alts: [encoder.encode("true"), encoder.encode("false")] };
    default:
      return { kind: "literal", alts: [encoder.encode("null")] };
  }
}

/**
 * Bounds as integers on the grid the matcher generates (10^-FRAC_DIGITS for numbers, 1 for
 * integers), so that "can this prefix still reach the range" is exact integer arithmetic.
 * @param {Record<string, any>} s @param {boolean} integer @param {string} path @returns {Node}
 */
function numberNode(s, integer, path) {
  for (const k of ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]) {
    if (s[k] !== undefined && (typeof s[k] !== "number" || !Number.isFinite(s[k]))) fail(`${path}.${k}`, `expected a number, got ${JSON.stringify(s[k])}`);
  }
  const scale = integer ? 1 : 10 ** FRAC_DIGITS;
  /** The first (dir "up") or last ("down") grid point at or beyond v, or strictly beyond it. @param {number} v @param {"up" | "down"} dir @param {boolean} strict */
  const grid = (v, dir, strict) => {
    const x = v * scale, r = Math.round(x);
    if (Math.abs(x - r) <= 1e-9 * Math.max(1, Math.abs(x))) return BigInt(r) + (strict ? (dir === "up" ? 1n : -1n) : 0n);
    return BigInt(dir === "up" ? Math.ceil(x) : Math.floor(x));
  };
  /** @type {bigint | null} */ let lo = null;
  /** @type {bigint | null} */ let hi = null;
  /** @param {bigint | null} a @param {bigint} b @param {1 | -1} sign */
  const tighter = (a, b, sign) => (a === null ? b : sign > 0 ? (b > a ? b : a) : (b < a ? b : a));
  if (s.minimum !== undefined) lo = tighter(lo, grid(s.minimum, "up", false), 1);
  if (s.exclusiveMinimum !== undefined) lo = tighter(lo, grid(s.exclusiveMinimum, "up", true), 1);
  if (s.maximum !== undefined) hi = tighter(hi, grid(s.maximum, "down", false), -1);
  if (s.exclusiveMaximum !== undefined) hi = tighter(hi, grid(s.exclusiveMaximum, "down", true), -1);
  const min = s.minimum ?? null, max = s.maximum ?? null, exMin = s.exclusiveMinimum ?? null, exMax = s.exclusiveMaximum ?? null;
  const limit = BigInt(10 ** INT_DIGITS) * BigInt(scale) - 1n;
  if ((lo !== null && lo > limit) || (hi !== null && hi < -limit) || (lo !== null && hi !== null && lo > hi)) {
    fail(path, `no ${integer ? "integer" : "number"} with at most ${INT_DIGITS} digits${integer ? "" : ` and ${FRAC_DIGITS} decimals`} satisfies its bounds`);
  }
  return { kind: "number", integer, lo, hi, min, max, exMin, exMax };
}

/**
 * The grammar of a `response_format` (OpenAI shape): null for plain text.
 * @param {unknown} rf
 * @returns {Node | null}
 */
export function responseFormatGrammar(rf) {
  if (rf == null) return null;
  const r = /** @type {any} */ (rf);
  if (typeof r !== "object" || typeof r.type !== "string") {
    throw new InvalidRequestError('response_format: expected {type: "text" | "json_object" | "json_schema", ...}.', { param: "response_format" });
  }
  if (r.type === "text") return null;
  if (r.type === "json_object") return { kind: "object", props: [], values: { kind: "any", depth: 1 } };
  if (r.type === "json_schema") {
    const js = r.json_schema;
    if (!js || typeof js !== "object" || !("schema" in js)) {
      throw new InvalidRequestError("response_format.json_schema: expected {name?, schema, strict?}.", { param: "response_format" });
    }
    return compileSchema(js.schema, "json_schema.schema");
  }
  throw new InvalidRequestError(`response_format.type: expected "text", "json_object" or "json_schema", got ${JSON.stringify(r.type)}.`,
    { param: "response_format" });
}
