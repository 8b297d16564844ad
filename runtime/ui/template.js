// Filling a form's prompt template (docs/spec.md "Prompt templates"). The build ships the
// parsed form (`parts` in app.json, from sitegen/spec/template.py); this never parses text,
// and a value is inserted as it is, never read again as template.

/**
 * @typedef {{ text: string } | { field: string }} Part
 * @typedef {Part | { optional: Part[] }} TemplatePart
 */

/**
 * @param {TemplatePart[]} parts @param {Record<string, string>} values
 * @returns {string}
 */
export function fillTemplate(parts, values) {
  /** @param {Part} p */
  const one = (p) => ("text" in p ? p.text : values[p.field] ?? "");
  return parts.map((p) => {
    if (!("optional" in p)) return one(p);
    // An optional part `[[ ... ]]` vanishes when any field it uses is empty.
    const empty = p.optional.some((q) => "field" in q && !(values[q.field] ?? "").trim());
    return empty ? "" : p.optional.map(one).join("");
  }).join("");
}
