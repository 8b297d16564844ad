// Registers the site's service worker (issue 15, item 5). `sitegen build` copies this file to
// assets/offline-<hash>.js, one folder below the site root, where it finds sw.js; every page
// loads it. It also answers the worker's "is this page generating?" before an update takes
// over (app_templates/offline/sw.js): a page with a reply streaming keeps the old version.

const sw = navigator.serviceWorker;

/** Whether this page's app is generating a reply (runtime/ui/app.js exposes `sitegenApp`). */
function busy() {
  const app = /** @type {any} */ (window).sitegenApp;
  return Boolean(app && app.stream);
}

if (sw && window.isSecureContext) {
  sw.addEventListener("message", (event) => {
    if (event.data?.kind === "sitegen-busy?") event.ports[0]?.postMessage({ busy: busy() });
  });
  const root = new URL("../", import.meta.url);
  sw.register(new URL("sw.js", root), { scope: root.href, updateViaCache: "none" })
    .then((registration) => {
      const mark = () => {
        // For the page (and tests): a newer build is installed and takes over at the next load.
        if (registration.waiting && sw.controller) document.documentElement.dataset.sitegenUpdate = "ready";
      };
      mark();
      registration.addEventListener("updatefound", () => {
        registration.installing?.addEventListener("statechange", mark);
      });
    })
    .catch((e) => console.warn(`sitegen: the service worker did not register (${e.message}); the site works, but not offline.`));
}
