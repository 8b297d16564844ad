// The site's service worker (issue 15, item 5), written to the site root as sw.js by
// `sitegen build` with BUILD filled in (sitegen/deploy/offline.py). It
//
// - precaches the app shell (pages, app.json, runtime, shaders, any .wasm, styles, model
//   manifests) of exactly one build into the cache `sitegen-shell-<version>`, checking every
//   file's sha256 against the build's list, so a cache never holds a mix of two deploys;
// - serves those files from that cache (a returning visitor works offline once the model's
//   shards are in the loader's own cache, runtime/loader/cache.js; shards never pass here);
// - adds COOP/COEP to what it serves, so the pages are cross-origin isolated on hosts that
//   cannot send headers (GitHub Pages) from the second page load on;
// - updates cleanly: a new build installs beside the old one and waits; it takes over at the
//   next page load when no open page is generating (asked through register.js), and only then
//   deletes the old shell. A running conversation keeps its version to the end.
// - retires itself when a later build has `site.offline: false` (BUILD.retire): it takes over at
//   once, deletes every shell cache and has no fetch handler, so every request goes to the host.
//   It does not unregister: in Chromium a reload of a page whose worker's registration is being
//   removed could hang, and a worker with no fetch handler costs nothing.

/** @type {{version: string, shell: {url: string, sha256: string}[], isolate: boolean, retire?: boolean}} */
const BUILD = /*SITEGEN_BUILD*/ { version: "dev", shell: [], isolate: true };

const PREFIX = "sitegen-shell-";
const CACHE = PREFIX + BUILD.version;
const SCOPE = new URL("./", self.location.href);
const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};
/** URL (without query or hash) → sha256 of the file this build wrote there. */
const SHELL = new Map(BUILD.shell.map((e) => [new URL(e.url, SCOPE).href, e.sha256]));

self.addEventListener("install", (event) => event.waitUntil(BUILD.retire ? self.skipWaiting() : precache()));

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    // The weights' caches (sitegen-weights-*) are the loader's: only old shells go.
    for (const name of await caches.keys()) {
      if (name.startsWith(PREFIX) && (name !== CACHE || BUILD.retire)) await caches.delete(name);
    }
  })());
});

self.addEventListener("message", (event) => {
  if (event.data?.kind === "sitegen-skip-waiting") self.skipWaiting();
  if (event.data?.kind === "sitegen-version") event.ports[0]?.postMessage({ version: BUILD.version });
});

// A retiring worker has no fetch handler at all, so the browser sends every request straight to
// the network, whatever state the worker and its registration are in.
if (!BUILD.retire) self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  url.hash = "";
  if (request.mode === "navigate") url.search = "";
  if (!SHELL.has(url.href)) return; // shards, other origins, unknown pages: the network, untouched
  event.respondWith(request.mode === "navigate" ? navigate(url.href, request) : fromShell(url.href, request));
});

/** @param {ArrayBuffer} buf */
async function sha256(buf) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function precache() {
  const cache = await caches.open(CACHE);
  await Promise.all([...SHELL].map(async ([url, want]) => {
    if (await cache.match(url)) return; // an install that failed half-way is retried
    const response = await fetch(url, { cache: "no-cache" });
    if (!response.ok) throw new Error(`sitegen: ${url}: HTTP ${response.status}; the shell is not cached`);
    const body = await response.arrayBuffer();
    const got = await sha256(body);
    // A file of another deploy (the host is half-way through an update): fail the install; the
    // browser tries again at a later page load, with whatever sw.js the host then serves.
    if (got !== want) throw new Error(`sitegen: ${url} is not the file of build ${BUILD.version}`);
    const headers = new Headers();
    for (const name of ["Content-Type", "Content-Language"]) {
      const v = response.headers.get(name);
      if (v) headers.set(name, v);
    }
    await cache.put(url, new Response(body, { status: 200, headers }));
  }));
}

/** @param {string} url @param {Request} request */
async function fromShell(url, request) {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(url);
  return isolate(hit ?? await fetch(request));
}

/**
 * The answer to a page load that hands over to a waiting build: a blank page that reloads as soon as
 * the new worker is active (Refresh: a backstop where scripts do not run).
 */
const HANDOVER = `<!doctype html><meta charset="utf-8"><title></title><script>
(async () => {
  const r = await navigator.serviceWorker.getRegistration();
  for (let i = 0; i < 100 && r && r.waiting; i++) await new Promise((ok) => setTimeout(ok, 100));
  location.reload();
})();
</script>`;

/** The waiting worker the last handover went to, and when (`navigate`). */
let handedTo = /** @type {ServiceWorker | null} */ (null);
let handedAt = 0;

/**
 * A page load. When a newer build is installed and waiting and no open page is generating,
 * let it take over first: answer at once with a page that reloads once it is active, and that
 * reload is the new worker's. Not by waiting here for the activation: Chromium activates a
 * worker only when the old one has no fetch in progress, so that wait would hold up what it
 * waits for (each load then stalled until a timeout, and a reload arriving before the handover
 * finished was held again: the page could be stuck on it). A worker that has not taken over a
 * minute after its handover (it failed to activate) is left waiting: loads get this version.
 * @param {string} url @param {Request} request
 */
async function navigate(url, request) {
  const waiting = self.registration.waiting;
  const stale = waiting !== null && waiting === handedTo && Date.now() - handedAt > 60000;
  if (waiting && !stale && !(await anyPageBusy())) {
    if (waiting !== handedTo) { handedTo = waiting; handedAt = Date.now(); }
    waiting.postMessage({ kind: "sitegen-skip-waiting" });
    return new Response(HANDOVER, { headers: { "Content-Type": "text/html; charset=utf-8", Refresh: "10",
      "Cache-Control": "no-store" } });
  }
  return fromShell(url, request);
}

/** Whether any open page of the site is generating (each answers through register.js). */
async function anyPageBusy() {
  // Uncontrolled pages too (a first visit's): they would fetch the new files from then on as well.
  const pages = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const answers = await Promise.all(pages.map((client) => new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = (e) => resolve(Boolean(e.data?.busy));
    client.postMessage({ kind: "sitegen-busy?" }, [channel.port2]);
    setTimeout(() => resolve(false), 500); // a page going away (the one being reloaded) or frozen
  })));
  return answers.some(Boolean);
}

/** @param {Response} response */
function isolate(response) {
  if (!BUILD.isolate || response.type === "opaque" || response.status === 0) return response;
  const headers = new Headers(response.headers);
  for (const [name, value] of Object.entries(ISOLATION)) if (!headers.has(name)) headers.set(name, value);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
