// The MkDocs page's side of an embedded sitegen app (issue 16): gives each app the colours and
// font of the page around it, and follows the theme when the reader switches it (Material's
// palette toggle, the mkdocs theme's colour mode, the system's dark mode).
//
// The app runs in a same-origin <iframe> (its own document, with its own strict CSP). This
// script runs in the MkDocs page, reads the page's computed colours where the app sits, and
// sets the app's CSS custom properties (app_templates/static/sitegen.css: --bg, --fg, --accent,
// --muted, --surface, --border) on the app's root element through the CSSOM, which the app's CSP
// (no inline styles) allows. Written by the plugin as SITE_DIR/sitegen/assets/embed-<hash>.js.

const EMBED = ".sitegen-embed[data-colours='page']";

/** @typedef {{ bg: string, fg: string, accent: string, font: string, dark: boolean }} Colours */

/** @type {CanvasRenderingContext2D | null} */
let canvas = null;

/**
 * Any CSS colour as [r, g, b, a] (0-255, a 0-1), through a canvas (handles oklch(), color()...).
 * @param {string} colour @returns {number[]}
 */
function rgba(colour) {
  const ctx = canvas ??= Object.assign(document.createElement("canvas"), { width: 1, height: 1 })
    .getContext("2d", { willReadFrequently: true });
  if (!ctx) return [255, 255, 255, 1];
  ctx.clearRect(0, 0, 1, 1);
  ctx.fillStyle = "#000";
  ctx.fillStyle = colour;
  ctx.fillRect(0, 0, 1, 1);
  const [r, g, b, a] = ctx.getImageData(0, 0, 1, 1).data;
  return [r, g, b, a / 255];
}

/**
 * The first opaque background at or above `el` (the page's, where the app sits).
 * @param {Element} el @returns {string}
 */
function backgroundOf(el) {
  for (let /** @type {Element | null} */ e = el; e; e = e.parentElement) {
    const c = getComputedStyle(e).backgroundColor;
    if (rgba(c)[3] > 0.5) return c;
  }
  return "rgb(255, 255, 255)";
}

/** Relative luminance (WCAG) of a colour, 0 (black) to 1 (white). @param {string} colour */
function luminance(colour) {
  const lin = (/** @type {number} */ v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  const [r, g, b] = rgba(colour);
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

/**
 * The page's colours at one embed: its text, background, link colour (the accent) and font.
 * @param {Element} embed @returns {Colours}
 */
function pageColours(embed) {
  const style = getComputedStyle(embed);
  // The "open in its own page" link is an ordinary link of the page: the theme styles it.
  const link = embed.querySelector("a");
  const bg = backgroundOf(embed);
  return { bg, fg: style.color, accent: link ? getComputedStyle(link).color : style.color,
    font: style.fontFamily, dark: luminance(bg) < 0.25 };
}

/**
 * Set the app's custom properties from the page's colours (no-op until the app has loaded).
 * @param {HTMLIFrameElement} iframe @param {Colours} c
 */
function apply(iframe, c) {
  let doc;
  try {
    doc = iframe.contentDocument; // null or throws on another origin (file://): keep the app's own
  } catch {
    return;
  }
  if (!doc?.documentElement || !doc.querySelector("#app")) return;
  const root = doc.documentElement.style;
  root.setProperty("--bg", c.bg);
  root.setProperty("--fg", c.fg);
  root.setProperty("--accent", c.accent);
  root.setProperty("--muted", `color-mix(in srgb, ${c.fg} 65%, ${c.bg})`);
  root.setProperty("--surface", `color-mix(in srgb, ${c.fg} 5%, ${c.bg})`);
  root.setProperty("--border", `color-mix(in srgb, ${c.fg} 22%, ${c.bg})`);
  root.setProperty("color-scheme", c.dark ? "dark" : "light");
  root.setProperty("font-family", c.font);
  doc.documentElement.dataset.embedded = "mkdocs";
  // The app's header links to the sitegen site's front page: inside a docs page, the page's own
  // navigation does that job.
  for (const el of doc.querySelectorAll(".site-header")) {
    /** @type {HTMLElement} */ (el).style.setProperty("display", "none");
  }
  iframe.style.setProperty("border-color", `color-mix(in srgb, ${c.fg} 22%, ${c.bg})`);
}

function applyAll() {
  for (const embed of document.querySelectorAll(EMBED)) {
    const iframe = embed.querySelector("iframe");
    if (iframe) apply(iframe, pageColours(embed));
  }
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; applyAll(); });
  // Themes may fade their colours (Material: 0.25 s); look again once that is over.
  setTimeout(applyAll, 400);
}

for (const embed of document.querySelectorAll(EMBED)) {
  embed.querySelector("iframe")?.addEventListener("load", () => applyAll());
}
// Themes switch colours by attributes on <html> or <body> (data-md-color-scheme, data-bs-theme,
// class) or by the system's colour scheme.
const observer = new MutationObserver(schedule);
for (const el of [document.documentElement, document.body]) {
  observer.observe(el, { attributes: true });
}
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", schedule);
applyAll();
