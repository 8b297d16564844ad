// The escape-first Markdown renderer (runtime/ui/markdown.js): the parse tree
// for each construct, the link-scheme filter, and that rendering through a
// DOM-like document never turns model text into markup.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseMarkdown, parseInline, safeUrl, MarkdownView, renderBlock } from "../../runtime/ui/markdown.js";

const t = (text) => ({ type: "text", text });

test("paragraphs, line breaks and emphasis", () => {
  assert.deepEqual(parseMarkdown("Hello *you* and **them**\nnext ~~old~~\n\nsecond"), [
    { type: "paragraph", children: [t("Hello "), { type: "em", children: [t("you")] }, t(" and "),
      { type: "strong", children: [t("them")] }, { type: "br" }, t("next "), { type: "del", children: [t("old")] }] },
    { type: "paragraph", children: [t("second")] },
  ]);
  // Unclosed or spaced delimiters and snake_case stay text.
  assert.deepEqual(parseInline("a * b ** c snake_case_name **open"), [t("a * b ** c snake_case_name **open")]);
  assert.deepEqual(parseInline("\\*not em\\*"), [t("*not em*")]);
});

test("inline code keeps its content literal", () => {
  assert.deepEqual(parseInline("run `x = *y*` now"), [t("run "), { type: "code", text: "x = *y*" }, t(" now")]);
  assert.deepEqual(parseInline("``a ` b``"), [{ type: "code", text: "a ` b" }]);
  assert.deepEqual(parseInline("lone ` tick"), [t("lone ` tick")]);
});

test("headings, rules, quotes", () => {
  assert.deepEqual(parseMarkdown("## Title ##\n---\n> quoted *x*"), [
    { type: "heading", level: 2, children: [t("Title")] },
    { type: "hr" },
    { type: "blockquote", children: [{ type: "paragraph", children: [t("quoted "), { type: "em", children: [t("x")] }] }] },
  ]);
});

test("lists, ordered with start, nested", () => {
  assert.deepEqual(parseMarkdown("- one\n- two\n  - inner\n\n3. three\n4. four"), [
    { type: "list", ordered: false, start: 1, items: [
      [{ type: "paragraph", children: [t("one")] }],
      [{ type: "paragraph", children: [t("two")] },
        { type: "list", ordered: false, start: 1, items: [[{ type: "paragraph", children: [t("inner")] }]] }],
    ] },
    { type: "list", ordered: true, start: 3, items: [
      [{ type: "paragraph", children: [t("three")] }], [{ type: "paragraph", children: [t("four")] }],
    ] },
  ]);
});

test("tables with alignment and escaped pipes", () => {
  assert.deepEqual(parseMarkdown("| a | b |\n|:--|--:|\n| `x|y` | 2 \\| 3 |"), [
    { type: "table", align: ["left", "right"], header: [[t("a")], [t("b")]],
      rows: [[[{ type: "code", text: "x|y" }], [t("2 | 3")]]] },
  ]);
});

test("fenced code, closed and still streaming", () => {
  assert.deepEqual(parseMarkdown("```js\nlet a = '<b>';\n```\nafter"), [
    { type: "code", lang: "js", text: "let a = '<b>';", closed: true },
    { type: "paragraph", children: [t("after")] },
  ]);
  assert.deepEqual(parseMarkdown("~~~\nopen"), [{ type: "code", lang: "", text: "open", closed: false }]);
  // A hostile info string cannot smuggle a class or attribute.
  assert.match(parseMarkdown('```js"><img\nx\n```')[0].lang, /^[\w+#.-]*$/);
});

test("links: only http(s) and mailto survive", () => {
  assert.equal(safeUrl("https://example.org/a?b=1"), "https://example.org/a?b=1");
  assert.equal(safeUrl("mailto:a@b.c"), "mailto:a@b.c");
  for (const bad of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "java\tscript:alert(1)", " javascript:x",
    "data:text/html,<script>", "vbscript:x", "//evil.example/x", "/relative", "file:///etc/passwd", "http://",
    "https:alert(1)", "\u0000javascript:x"]) {
    assert.equal(safeUrl(bad), null, bad);
  }
  assert.deepEqual(parseInline("[docs](https://example.org/(x)) and [bad](javascript:alert(1))"), [
    { type: "link", href: "https://example.org/(x)", children: [t("docs")] }, t(" and "), t("bad"),
  ]);
  assert.deepEqual(parseInline("see https://example.org/x. <mailto:a@b.c> ![alt](https://img.example/x.png)"), [
    t("see "), { type: "link", href: "https://example.org/x", children: [t("https://example.org/x")] }, t(". "),
    { type: "link", href: "mailto:a@b.c", children: [t("mailto:a@b.c")] }, t(" "), t("alt"),
  ]);
});

// --- a tiny DOM, enough for the renderer, serialised with every text escaped ---

class FakeNode {
  constructor(tag, text) { this.tag = tag; this.text = text; this.attrs = {}; this.children = []; }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  appendChild(c) { this.children.push(c); return c; }
  removeChild(c) { this.children.splice(this.children.indexOf(c), 1); return c; }
}
const doc = {
  createElement: (tag) => new FakeNode(tag, null),
  createTextNode: (text) => new FakeNode(null, text),
};
const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
function html(node) {
  if (node.tag === null) return esc(node.text);
  const attrs = Object.entries(node.attrs).map(([k, v]) => ` ${k}="${esc(v)}"`).join("");
  return `<${node.tag}${attrs}>${node.children.map(html).join("")}</${node.tag}>`;
}

test("rendering builds elements only from the parse tree", () => {
  const evil = "<script>alert(1)</script> <img src=x onerror=alert(1)> &lt;b&gt; [x](javascript:alert(1)) "
    + "[y](https://ok.example/\"onmouseover=\"x) **<b>bold</b>**\n\n```html\n<script>bad()</script>\n```";
  const root = new FakeNode("div", null);
  new MarkdownView(root, { doc, strings: { copy: "Copy" } }).update(evil);
  const out = root.children.map(html).join("");
  const tags = new Set([...out.matchAll(/<([a-z0-9]+)/g)].map((m) => m[1]));
  assert.deepEqual([...tags].sort(), ["a", "button", "code", "div", "p", "pre", "span", "strong"]);
  assert.ok(out.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
  assert.ok(out.includes("&amp;lt;b&amp;gt;")); // entities stay the characters the model wrote
  assert.match(out, /<a href="https:\/\/ok.example\/%22onmouseover=%22x" rel="noopener noreferrer" target="_blank">y<\/a>/);
  assert.ok(!out.includes("javascript:alert(1)\""));
});

test("streaming keeps unchanged blocks and rebuilds the last one", () => {
  const root = new FakeNode("div", null);
  const view = new MarkdownView(root, { doc });
  view.update("First paragraph.\n\nSec");
  const first = root.children[0];
  view.update("First paragraph.\n\nSecond **bold**");
  assert.equal(root.children[0], first);
  assert.equal(root.children.length, 2);
  assert.equal(html(root.children[1]), "<p>Second <strong>bold</strong></p>");
  view.update("First paragraph.\n\nSecond **bold**\n\n```py\nprint(1)");
  assert.equal(html(root.children[2]),
    '<div class="code-block"><div class="code-head"><span class="code-lang">py</span>'
    + '<button type="button" class="copy-code">Copy</button></div><pre><code class="language-py">print(1)</code></pre></div>');
  assert.equal(html(renderBlock(doc, { type: "hr" }, { copy: "" })), "<hr></hr>");
});
