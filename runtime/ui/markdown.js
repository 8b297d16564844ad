// Escape-first Markdown for model output (issue 6, item 4).
//
// The model's text is parsed into a small tree (blocks → inlines), and the
// tree is turned into DOM nodes with createElement / createTextNode and
// attributes set one by one. No string of model text is ever parsed as HTML
// (no innerHTML, no insertAdjacentHTML): `<script>` in a reply is the text
// "<script>". Links keep only http(s) and mailto URLs and open in a new tab
// with rel="noopener noreferrer"; images are shown as their alt text (a
// model must not make the page fetch anything).
//
// The subset: paragraphs (a single newline is a line break), ATX headings,
// emphasis (*em*, **strong**, ~~del~~), inline code, links, autolinks and bare
// URLs, bullet and ordered lists (nested by indentation), block quotes,
// pipe tables, fenced code blocks (with a copy button) and thematic breaks.
//
// Streaming: `MarkdownView.update(text)` re-parses the whole text (cheap at
// reply sizes) but keeps the DOM nodes of every leading block whose source is
// unchanged, so only the block being written is rebuilt on each token. An
// unclosed code fence renders as a code block so far.

/**
 * @typedef {{ type: "text", text: string } | { type: "code", text: string } | { type: "br" }
 *   | { type: "strong" | "em" | "del", children: Inline[] }
 *   | { type: "link", href: string, children: Inline[] }} Inline
 * @typedef {{ type: "paragraph", children: Inline[] } | { type: "heading", level: number, children: Inline[] }
 *   | { type: "code", lang: string, text: string, closed: boolean } | { type: "hr" }
 *   | { type: "list", ordered: boolean, start: number, items: Block[][] }
 *   | { type: "blockquote", children: Block[] }
 *   | { type: "table", align: (null | "left" | "center" | "right")[], header: Inline[][], rows: Inline[][][] }} Block
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])([ \t]+|$)(.*)$/;
const TABLE_DELIM = /^[ \t]*\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const BLANK = /^[ \t]*$/;

/**
 * Parse Markdown into blocks, each with the source text it came from.
 * @param {string} text
 * @returns {{ src: string, block: Block }[]}
 */
export function parseDocument(text) {
  return parseLines(text.replace(/\r\n?/g, "\n").split("\n"));
}

/**
 * Parse Markdown into a tree of blocks (what the renderer draws).
 * @param {string} text
 * @returns {Block[]}
 */
export function parseMarkdown(text) {
  return parseDocument(text).map((b) => b.block);
}

/** @param {string} line */
function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || HR.test(line) || QUOTE.test(line)
    || /^ {0,3}([-*+]|1[.)])[ \t]+\S/.test(line);
}

/**
 * @param {string[]} lines
 * @returns {{ src: string, block: Block }[]}
 */
function parseLines(lines) {
  /** @type {{ src: string, block: Block }[]} */
  const out = [];
  let i = 0;
  const n = lines.length;
  while (i < n) {
    const line = lines[i];
    const start = i;
    if (BLANK.test(line)) { i++; continue; }
    /** @type {Block} */
    let block;
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      let closed = false;
      i++;
      const close = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}[ \\t]*$`);
      while (i < n) {
        if (close.test(lines[i])) { closed = true; i++; break; }
        body.push(lines[i]);
        i++;
      }
      block = { type: "code", lang: m[2].replace(/[^\w+#.-]/g, "").slice(0, 32), text: body.join("\n"), closed };
    } else if ((m = HEADING.exec(line))) {
      block = { type: "heading", level: m[1].length, children: parseInline(m[2] ?? "") };
      i++;
    } else if (HR.test(line)) {
      block = { type: "hr" };
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < n && !BLANK.test(lines[i]) && (QUOTE.test(lines[i]) || body.length)) {
        body.push(lines[i].replace(QUOTE, ""));
        i++;
      }
      block = { type: "blockquote", children: parseLines(body).map((b) => b.block) };
    } else if ((m = LIST_ITEM.exec(line))) {
      [block, i] = parseList(lines, i);
    } else if (line.includes("|") && i + 1 < n && TABLE_DELIM.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      [block, i] = parseTable(lines, i);
    } else {
      const body = [line];
      i++;
      while (i < n && !BLANK.test(lines[i]) && !startsBlock(lines[i])) {
        if (lines[i].includes("|") && i + 1 < n && TABLE_DELIM.test(lines[i + 1])) break;
        body.push(lines[i]);
        i++;
      }
      block = { type: "paragraph", children: parseInline(body.map((l) => l.trim()).join("\n")) };
    }
    out.push({ src: lines.slice(start, i).join("\n"), block });
  }
  return out;
}

/**
 * A list starting at `lines[i]`: items of the same kind (bullet or ordered);
 * an item's lines are de-indented by its content column and parsed again.
 * @param {string[]} lines @param {number} i
 * @returns {[Block, number]}
 */
function parseList(lines, i) {
  const first = /** @type {RegExpExecArray} */ (LIST_ITEM.exec(lines[i]));
  const ordered = /\d/.test(first[2]);
  const start = ordered ? parseInt(first[2], 10) : 1;
  /** @type {Block[][]} */
  const items = [];
  const n = lines.length;
  while (i < n) {
    const m = LIST_ITEM.exec(lines[i]);
    if (!m || /\d/.test(m[2]) !== ordered) break;
    const indent = m[1].length + m[2].length + Math.min(Math.max(m[3].length, 1), 4);
    const body = [m[4]];
    i++;
    let blankBefore = false;
    while (i < n) {
      const l = lines[i];
      if (BLANK.test(l)) { blankBefore = true; body.push(""); i++; continue; }
      const lead = /** @type {RegExpExecArray} */ (/^[ \t]*/.exec(l))[0].replace(/\t/g, "    ").length;
      if (lead >= indent) { body.push(l.replace(/^[ \t]*/, " ".repeat(Math.max(0, lead - indent)))); blankBefore = false; i++; continue; }
      // A lazy continuation line of the item's paragraph (no blank line, no new block).
      if (!blankBefore && !LIST_ITEM.test(l) && !startsBlock(l)) { body.push(l.trim()); i++; continue; }
      break;
    }
    while (body.length && body[body.length - 1] === "") body.pop();
    // A blank line followed by something other than an item ends the list.
    items.push(parseLines(body).map((b) => b.block));
    if (blankBefore && i < n && !LIST_ITEM.test(lines[i])) break;
  }
  return [{ type: "list", ordered, start, items }, i];
}

/** @param {string} row */
function splitRow(row) {
  let s = row.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  /** @type {string[]} */
  const cells = [];
  let cur = "";
  let inCode = false;
  for (let k = 0; k < s.length; k++) {
    const c = s[k];
    if (c === "\\" && s[k + 1] === "|") { cur += "|"; k++; continue; }
    if (c === "`") inCode = !inCode;
    if (c === "|" && !inCode) { cells.push(cur.trim()); cur = ""; continue; }
    cur += c;
  }
  cells.push(cur.trim());
  return cells;
}

/**
 * @param {string[]} lines @param {number} i
 * @returns {[Block, number]}
 */
function parseTable(lines, i) {
  const header = splitRow(lines[i]);
  const align = splitRow(lines[i + 1]).map((d) => {
    const l = d.startsWith(":"), r = d.endsWith(":");
    return l && r ? "center" : r ? "right" : l ? "left" : null;
  });
  const width = header.length;
  i += 2;
  /** @type {Inline[][][]} */
  const rows = [];
  while (i < lines.length && !BLANK.test(lines[i]) && lines[i].includes("|")) {
    const cells = splitRow(lines[i]);
    rows.push(Array.from({ length: width }, (_, k) => parseInline(cells[k] ?? "")));
    i++;
  }
  return [{
    type: "table", align: Array.from({ length: width }, (_, k) => /** @type {any} */ (align[k] ?? null)),
    header: header.map((h) => parseInline(h)), rows,
  }, i];
}

const ESCAPABLE = /[\\`*_{}[\]()#+\-.!|~<>"'&]/;

/**
 * A URL the page may link to: absolute http(s) or mailto, nothing else
 * (`javascript:`, `data:`, `vbscript:`, relative paths and protocol-relative
 * `//host` are refused). Returns the normalised URL, or null.
 * @param {string} raw
 * @returns {string | null}
 */
export function safeUrl(raw) {
  const s = raw.trim();
  // Control characters and whitespace inside a URL are how scheme filters get fooled ("java\tscript:").
  if (!s || /[\u0000-\u0020\u007f-\u009f]/.test(s)) return null;
  if (!/^(https?:\/\/|mailto:)/i.test(s)) return null;
  let url;
  try {
    url = new URL(s);
  } catch {
    return null;
  }
  if (!["http:", "https:", "mailto:"].includes(url.protocol)) return null;
  if (url.protocol !== "mailto:" && !url.hostname) return null;
  return url.href;
}

/**
 * Find the `]` that closes the `[` at `open`, allowing nested brackets.
 * @param {string} s @param {number} open
 */
function closingBracket(s, open) {
  let depth = 0;
  for (let k = open; k < s.length; k++) {
    const c = s[k];
    if (c === "\\") { k++; continue; }
    if (c === "`") { const e = s.indexOf("`", k + 1); if (e < 0) return -1; k = e; continue; }
    if (c === "[") depth++;
    else if (c === "]" && --depth === 0) return k;
  }
  return -1;
}

/**
 * The `(url "title")` destination at `s[k] === "("`: returns [url, end] or null.
 * @param {string} s @param {number} k
 * @returns {[string, number] | null}
 */
function destination(s, k) {
  if (s[k] !== "(") return null;
  let j = k + 1;
  while (s[j] === " ") j++;
  let url = "";
  if (s[j] === "<") {
    const e = s.indexOf(">", j);
    if (e < 0) return null;
    url = s.slice(j + 1, e);
    j = e + 1;
  } else {
    let depth = 0;
    for (; j < s.length; j++) {
      const c = s[j];
      if (c === "\\" && j + 1 < s.length) { url += s[++j]; continue; }
      if (c === " " || c === "\n") break;
      if (c === "(") depth++;
      if (c === ")") { if (depth === 0) break; depth--; }
      url += c;
    }
  }
  while (s[j] === " ") j++;
  if (s[j] === '"' || s[j] === "'") {
    const e = s.indexOf(s[j], j + 1);
    if (e < 0) return null;
    j = e + 1;
    while (s[j] === " ") j++;
  }
  if (s[j] !== ")") return null;
  return [url, j + 1];
}

/**
 * Inline Markdown → inline nodes. Every character of the input ends up in a
 * text node, a code node, or a delimiter that was consumed.
 * @param {string} s
 * @returns {Inline[]}
 */
export function parseInline(s) {
  /** @type {Inline[]} */
  const out = [];
  let text = "";
  const flush = () => { if (text) { out.push({ type: "text", text }); text = ""; } };
  let k = 0;
  while (k < s.length) {
    const c = s[k];
    if (c === "\\" && k + 1 < s.length && ESCAPABLE.test(s[k + 1])) { text += s[k + 1]; k += 2; continue; }
    if (c === "\\" && s[k + 1] === "\n") { flush(); out.push({ type: "br" }); k += 2; continue; }
    if (c === "\n") { text = text.replace(/ +$/, ""); flush(); out.push({ type: "br" }); k++; while (s[k] === " ") k++; continue; }
    if (c === "`") {
      const run = /** @type {RegExpExecArray} */ (/^`+/.exec(s.slice(k)))[0];
      const end = s.indexOf(run, k + run.length);
      // The closing run must be exactly as long (not part of a longer run).
      if (end >= 0 && s[end + run.length] !== "`") {
        flush();
        let code = s.slice(k + run.length, end).replace(/\n/g, " ");
        if (/^ .* $/.test(code) && code.trim()) code = code.slice(1, -1);
        out.push({ type: "code", text: code });
        k = end + run.length;
        continue;
      }
      text += run;
      k += run.length;
      continue;
    }
    if (c === "[" || (c === "!" && s[k + 1] === "[")) {
      const image = c === "!";
      const open = image ? k + 1 : k;
      const close = closingBracket(s, open);
      const dest = close > 0 ? destination(s, close + 1) : null;
      if (dest) {
        flush();
        const label = s.slice(open + 1, close);
        const href = image ? null : safeUrl(dest[0]);
        const children = parseInline(label);
        // An image is shown as its alt text: the page never fetches what a model names.
        if (href) out.push({ type: "link", href, children });
        else out.push(...children);
        k = dest[1];
        continue;
      }
    }
    if (c === "<") {
      const m = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(s.slice(k));
      const href = m ? safeUrl(m[1]) : null;
      if (m && href) { flush(); out.push({ type: "link", href, children: [{ type: "text", text: m[1] }] }); k += m[0].length; continue; }
    }
    if ((c === "h" || c === "H") && (k === 0 || /[\s(*_~]/.test(s[k - 1]))) {
      const m = /^https?:\/\/[^\s<>]+/i.exec(s.slice(k));
      if (m) {
        let url = m[0].replace(/[.,;:!?'"*_~]+$/, "");
        // A trailing ")" belongs to the URL only when the URL opened one.
        while (url.endsWith(")") && (url.match(/\(/g)?.length ?? 0) < (url.match(/\)/g)?.length ?? 0)) url = url.slice(0, -1);
        const href = safeUrl(url);
        if (href) { flush(); out.push({ type: "link", href, children: [{ type: "text", text: url }] }); k += url.length; continue; }
      }
    }
    if (c === "*" || c === "_" || c === "~") {
      const run = /** @type {RegExpExecArray} */ (/^(\*+|_+|~+)/.exec(s.slice(k)))[0];
      const width = c === "~" ? (run.length >= 2 ? 2 : 0) : Math.min(run.length, 2);
      const delim = c.repeat(width);
      const after = s[k + width];
      // Intraword underscores (snake_case) are not emphasis.
      const intraword = c === "_" && k > 0 && /\w/.test(s[k - 1]);
      if (width && after && !/\s/.test(after) && !intraword) {
        const end = findCloser(s, k + width, delim);
        if (end > k + width) {
          flush();
          const type = c === "~" ? "del" : width === 2 ? "strong" : "em";
          out.push({ type, children: parseInline(s.slice(k + width, end)) });
          k = end + width;
          continue;
        }
      }
      text += run;
      k += run.length;
      continue;
    }
    text += c;
    k++;
  }
  flush();
  return out;
}

/**
 * The index of the delimiter that closes one opened before `from`, skipping
 * code spans and escapes; -1 when none.
 * @param {string} s @param {number} from @param {string} delim
 */
function findCloser(s, from, delim) {
  for (let k = from; k < s.length; k++) {
    const c = s[k];
    if (c === "\\") { k++; continue; }
    if (c === "`") {
      const e = s.indexOf("`", k + 1);
      if (e < 0) return -1;
      k = e;
      continue;
    }
    if (s.startsWith(delim, k) && !/\s/.test(s[k - 1])) {
      const next = s[k + delim.length];
      // "**" must not be the start of a longer run that closes something else ("***").
      if (delim.length === 1 && next === delim) { k++; continue; }
      if (delim[0] === "_" && next && /\w/.test(next)) continue;
      return k;
    }
  }
  return -1;
}

// --- DOM ----------------------------------------------------------------------------------------

/**
 * The part of `Document` the renderer uses (tests pass a tiny fake one).
 * @typedef {{ createElement(tag: string): HTMLElement, createTextNode(text: string): Text }} Doc
 * @typedef {{ copy: string }} RenderStrings
 */

/**
 * @param {Doc} doc @param {string} tag @param {Record<string, string>} [attrs]
 * @param {(Node | string)[]} [children]
 */
function el(doc, tag, attrs = {}, children = []) {
  const node = doc.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.appendChild(typeof c === "string" ? doc.createTextNode(c) : c);
  return node;
}

/**
 * @param {Doc} doc @param {Inline[]} inlines
 * @returns {Node[]}
 */
export function renderInline(doc, inlines) {
  return inlines.map((n) => {
    switch (n.type) {
      case "text": return doc.createTextNode(n.text);
      case "br": return el(doc, "br");
      case "code": return el(doc, "code", {}, [n.text]);
      case "strong": case "em": case "del": return el(doc, n.type, {}, renderInline(doc, n.children));
      case "link":
        return el(doc, "a", { href: n.href, rel: "noopener noreferrer", target: "_blank" }, renderInline(doc, n.children));
    }
    return doc.createTextNode("");
  });
}

/**
 * @param {Doc} doc @param {Block} b @param {RenderStrings} strings
 * @returns {Node}
 */
export function renderBlock(doc, b, strings) {
  switch (b.type) {
    case "paragraph": return el(doc, "p", {}, renderInline(doc, b.children));
    case "heading": return el(doc, `h${Math.min(b.level + 2, 6)}`, {}, renderInline(doc, b.children));
    case "hr": return el(doc, "hr");
    case "blockquote": return el(doc, "blockquote", {}, b.children.map((c) => renderBlock(doc, c, strings)));
    case "list": {
      /** @type {Record<string, string>} */
      const attrs = b.ordered && b.start !== 1 ? { start: String(b.start) } : {};
      return el(doc, b.ordered ? "ol" : "ul", attrs, b.items.map((item) => {
        // A one-paragraph item is drawn without its <p> (tight list).
        const parts = item.length === 1 && item[0].type === "paragraph"
          ? renderInline(doc, item[0].children) : item.map((c) => renderBlock(doc, c, strings));
        return el(doc, "li", {}, parts);
      }));
    }
    case "table": {
      const cellAttrs = (/** @type {number} */ k) => /** @type {Record<string, string>} */ (b.align[k] ? { class: `align-${b.align[k]}` } : {});
      const head = el(doc, "thead", {}, [el(doc, "tr", {}, b.header.map((h, k) => el(doc, "th", cellAttrs(k), renderInline(doc, h))))]);
      const body = el(doc, "tbody", {}, b.rows.map((r) => el(doc, "tr", {}, r.map((c, k) => el(doc, "td", cellAttrs(k), renderInline(doc, c))))));
      return el(doc, "div", { class: "table-wrap" }, [el(doc, "table", {}, [head, body])]);
    }
    case "code": {
      const code = el(doc, "code", b.lang ? { class: `language-${b.lang}` } : {}, [b.text]);
      const head = el(doc, "div", { class: "code-head" }, [
        el(doc, "span", { class: "code-lang" }, [b.lang]),
        el(doc, "button", { type: "button", class: "copy-code" }, [strings.copy]),
      ]);
      return el(doc, "div", { class: "code-block" }, [head, el(doc, "pre", {}, [code])]);
    }
  }
  return doc.createTextNode("");
}

/**
 * Renders Markdown into a container, rebuilding only the blocks that changed.
 */
export class MarkdownView {
  /**
   * @param {HTMLElement} container
   * @param {{ doc?: Doc, strings?: RenderStrings }} [options]
   */
  constructor(container, { doc = globalThis.document, strings = { copy: "Copy" } } = {}) {
    this.container = container;
    this.doc = doc;
    this.strings = strings;
    /** @type {{ src: string, node: Node }[]} */
    this.blocks = [];
  }

  /** @param {string} text */
  update(text) {
    const parsed = parseDocument(text);
    let keep = 0;
    while (keep < parsed.length && keep < this.blocks.length && parsed[keep].src === this.blocks[keep].src) keep++;
    for (const old of this.blocks.splice(keep)) this.container.removeChild(old.node);
    for (const { src, block } of parsed.slice(keep)) {
      const node = renderBlock(this.doc, block, this.strings);
      this.container.appendChild(node);
      this.blocks.push({ src, node });
    }
  }
}
