// Where a model comes from (issue 10, item 6): its manifest (a URL, a folder under Node, or
// given) and the loader that delivers its verified shards, plus its tokenizer.

import { AbortError, InvalidRequestError, ManifestError } from "./errors.js";

/**
 * @typedef {import("./engine.js").EngineOptions} EngineOptions
 * @typedef {import("./engine.js").Loader} Loader
 */

/**
 * Where the manifest and the shards come from.
 * @param {EngineOptions} options
 * @returns {Promise<{ manifest: any, loader: Loader }>}
 */
export async function resolveSource(options) {
  if (options.modelDir) {
    const files = await import("./node/files.js");
    const manifest = options.manifest ?? await files.readManifestFile(options.modelDir);
    return { manifest, loader: options.loader ?? files.createFileLoader(options.modelDir) };
  }
  if (options.manifestUrl) {
    const url = new URL(options.manifestUrl, globalThis.location?.href ?? import.meta.url);
    let manifest = options.manifest;
    if (!manifest) {
      let response;
      try {
        response = await fetch(url, { signal: options.signal });
      } catch (e) {
        if (/** @type {Error} */ (e).name === "AbortError") throw new AbortError();
        throw new ManifestError(`${url}: cannot fetch the model manifest (${/** @type {Error} */ (e).message}).`, { url: String(url) });
      }
      if (!response.ok) {
        throw new ManifestError(`${url}: HTTP ${response.status} fetching the model manifest; check the model's URL.`,
          { url: String(url), status: response.status });
      }
      try {
        manifest = await response.json();
      } catch (e) {
        throw new ManifestError(`${url}: the model manifest is not valid JSON.`, { url: String(url) });
      }
    }
    return { manifest, loader: options.loader ?? await defaultUrlLoader(url) };
  }
  if (options.manifest && options.loader) return { manifest: options.manifest, loader: options.loader };
  throw new InvalidRequestError("createEngine: pass manifestUrl (a model's manifest.json URL), or modelDir under Node.",
    { param: "manifestUrl" });
}

/**
 * The weight-delivery loader (runtime/loader/index.js): parallel, verified, cached.
 * Imported on demand so Node's file loader never pulls in the browser's cache code.
 * @param {URL} manifestUrl
 * @returns {Promise<Loader>}
 */
async function defaultUrlLoader(manifestUrl) {
  const { createLoader } = await import("./loader/index.js");
  return createLoader({ baseUrl: new URL(".", manifestUrl).href });
}

/** @param {any} manifest */
export async function loadTokenizer(manifest) {
  if (!manifest.tokenizer) return null;
  try {
    const mod = /** @type {any} */ (await import("./tokenizer/index.js"));
    return mod.createTokenizer(manifest.tokenizer);
  } catch (e) {
    // Not every consumer needs text (the logits command works on ids).
    return { error: /** @type {Error} */ (e) };
  }
}
