// Structured output on the page (issue 17): a reply that is JSON following the app's
// `output.schema` (app.json `output`, docs/spec.md "Structured output") is shown as data, by
// the app's declarative mapping: cards, a table or indented JSON. Every value goes into the
// DOM as text (textContent); nothing the model wrote is ever parsed as HTML, and no code of
// the app runs (the page's CSP stays strict: no eval, no inline script).

/**
 * @typedef {{ schema: any, show: "cards" | "table" | "json", items: string | null, title: string | null,
 *   body: string | null, columns: string[] | null, actions: ("use" | "merge" | "copy")[] }} OutputConfig
 * @typedef {{ chosen?: number | null, picked?: number[] }} OutputState  what the visitor did with the cards
 */

/**
 * The reply's data, or null when it is not (yet) a whole JSON document (streaming, or cut short).
 * @param {string} content
 * @returns {{ value: unknown } | null}
 */
export function parseOutput(content) {
  try {
    return { value: JSON.parse(content) };
  } catch {
    return null;
  }
}

/**
 * The items to show: the list at `output.items` (a dotted path), or the reply itself.
 * @param {OutputConfig} output @param {unknown} value
 * @returns {unknown[]}
 */
export function outputItems(output, value) {
  let v = value;
  for (const part of output.items ? output.items.split(".") : []) {
    v = v && typeof v === "object" && !Array.isArray(v) ? /** @type {Record<string, unknown>} */ (v)[part] : undefined;
  }
  if (Array.isArray(v)) return v;
  return v === undefined ? [] : [v];
}

/** @param {unknown} v */
const asText = (v) => (typeof v === "string" ? v : v === undefined ? "" : JSON.stringify(v));

/**
 * The text of one item (what "use", "copy" and the follow-ups' {responses} take): its `body`
 * field, the item itself when it is a string, else its fields as "label: value" lines.
 * @param {OutputConfig} output @param {unknown} item
 */
export function itemText(output, item) {
  if (typeof item === "string") return item;
  if (item && typeof item === "object" && !Array.isArray(item)) {
    const o = /** @type {Record<string, unknown>} */ (item);
    if (output.body) return asText(o[output.body]);
    return Object.entries(o).map(([k, v]) => `${k}: ${asText(v)}`).join("\n");
  }
  return asText(item);
}

/** The fields of the items (table columns): `columns`, else the item schema's properties, else the data's keys. */
function columnsOf(/** @type {OutputConfig} */ output, /** @type {unknown[]} */ items) {
  if (output.columns?.length) return output.columns;
  let s = output.schema;
  for (const part of output.items ? output.items.split(".") : []) s = s?.properties?.[part];
  const item = s?.type === "array" || s?.items ? s.items : s;
  const props = item?.properties ? Object.keys(item.properties) : [];
  if (props.length) return props;
  const keys = new Set();
  for (const it of items) if (it && typeof it === "object" && !Array.isArray(it)) for (const k of Object.keys(it)) keys.add(k);
  return [...keys];
}

/**
 * @param {string} tag @param {string} [cls] @param {string} [text]
 * @returns {HTMLElement}
 */
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/**
 * Render a reply into `container` (its children are replaced).
 * @param {HTMLElement} container
 * @param {OutputConfig} output
 * @param {string} content  the reply's text (JSON when complete)
 * @param {{ strings: Record<string, string>, state?: OutputState, done?: boolean }} o
 *   done: the reply is finished (an unparsable finished reply is shown raw, with a note)
 */
export function renderOutput(container, output, content, { strings, state = {}, done = true }) {
  container.classList.add("output");
  const parsed = parseOutput(content);
  if (!parsed) {
    const raw = el("pre", "output-raw", content);
    container.replaceChildren(raw);
    if (done && content) container.prepend(el("p", "output-note", strings.output_incomplete ?? "The reply is incomplete."));
    return;
  }
  const value = parsed.value;
  if (output.show === "json") {
    container.replaceChildren(el("pre", "output-json", JSON.stringify(value, null, 2)));
    return;
  }
  const items = outputItems(output, value);
  if (output.show === "table") {
    const cols = columnsOf(output, items);
    const table = el("table", "output-table");
    const head = el("tr");
    for (const c of cols) head.append(el("th", undefined, c));
    const thead = el("thead");
    thead.append(head);
    const tbody = el("tbody");
    for (const it of items) {
      const tr = el("tr");
      if (it && typeof it === "object" && !Array.isArray(it)) {
        for (const c of cols) tr.append(el("td", undefined, asText(/** @type {Record<string, unknown>} */ (it)[c])));
      } else {
        tr.append(el("td", undefined, asText(it)));
      }
      tbody.append(tr);
    }
    table.append(thead, tbody);
    container.replaceChildren(table);
    return;
  }
  const list = el("ol", "output-cards");
  items.forEach((it, i) => {
    const card = el("li", "output-card");
    card.dataset.index = String(i);
    if (state.chosen === i) card.classList.add("chosen");
    if (state.picked?.includes(i)) card.classList.add("picked");
    const obj = it && typeof it === "object" && !Array.isArray(it) ? /** @type {Record<string, unknown>} */ (it) : null;
    if (output.title && obj && obj[output.title] !== undefined) card.append(el("h3", "output-title", asText(obj[output.title])));
    if (obj && !output.body) {
      const dl = el("dl", "output-fields");
      for (const [k, v] of Object.entries(obj)) {
        if (k === output.title) continue;
        dl.append(el("dt", undefined, k), el("dd", undefined, asText(v)));
      }
      card.append(dl);
    } else {
      card.append(el("p", "output-text", itemText(output, it)));
    }
    const actions = el("div", "output-actions");
    for (const a of output.actions ?? []) {
      const b = /** @type {HTMLButtonElement} */ (el("button", `small output-${a}`));
      b.type = "button";
      b.dataset.action = a;
      b.dataset.index = String(i);
      if (a === "use") {
        b.textContent = state.chosen === i ? strings.output_chosen ?? "Chosen" : strings.output_use ?? "Use this one";
        b.setAttribute("aria-pressed", String(state.chosen === i));
      } else if (a === "merge") {
        b.textContent = state.picked?.includes(i) ? strings.output_merge_picked ?? "Picked" : strings.output_merge ?? "Merge";
        b.setAttribute("aria-pressed", String(Boolean(state.picked?.includes(i))));
      } else {
        b.textContent = strings.copy ?? "Copy";
      }
      actions.append(b);
    }
    if (actions.childElementCount) card.append(actions);
    list.append(card);
  });
  container.replaceChildren(list);
}
