// Fetching shards (issue 5, item 1): each shard streamed into a caller's
// buffer, retried with backoff on network errors and 5xx, resumed with a
// `Range` request from the last byte received when a connection drops, and
// cancellable through an AbortSignal. A failed cross-origin fetch is probed
// once in `no-cors` mode to tell a CORS problem (the host answers, but without
// Access-Control-Allow-Origin) from a network one.

import { AbortError, ShardLoadError } from "../errors.js";
import { CorsError, NetworkError, ShardNotFoundError } from "./errors.js";

/**
 * @typedef {{ signal?: AbortSignal, retries?: number, backoffMs?: number, fetchImpl?: typeof fetch,
 *             cacheMode?: RequestCache, onBytes?: (n: number) => void, onRestart?: (n: number) => void,
 *             label?: string, scratch?: { buf: Uint8Array | null } }} FetchOptions
 * @typedef {{ requests: number, rangeRequests: number }} FetchStats
 */

/** @param {number} ms @param {AbortSignal | undefined} signal */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) { reject(new AbortError()); return; }
    const timer = setTimeout(() => { signal?.removeEventListener("abort", onAbort); resolve(undefined); }, ms);
    const onAbort = () => { clearTimeout(timer); reject(new AbortError()); };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** @param {unknown} e */
const isAbort = (e) => e instanceof Error && e.name === "AbortError";

/** @param {string} url */
function isCrossOrigin(url) {
  const origin = globalThis.location?.origin;
  if (!origin || origin === "null") return false;
  try { return new URL(url, origin).origin !== origin; } catch { return false; }
}

/**
 * After a TypeError from a cross-origin fetch, is it a CORS problem? A
 * `no-cors` request that gets an (opaque) answer proves the host is reachable,
 * so the failure was CORS ("certain"). A cross-origin-isolated page (COEP)
 * cannot make that probe, so there it is "likely" (reported as CORS, naming
 * both causes); elsewhere a failed probe means a network error (null).
 * @param {string} url @param {typeof fetch} fetchImpl @param {AbortSignal | undefined} signal
 * @returns {Promise<"certain" | "likely" | null>}
 */
async function corsVerdict(url, fetchImpl, signal) {
  if (!isCrossOrigin(url) || globalThis.navigator?.onLine === false) return null;
  try {
    const r = await fetchImpl(url, { mode: "no-cors", cache: "no-store", signal });
    await r.body?.cancel();
    if (r.type === "opaque") return "certain";
  } catch {
    // fall through
  }
  return globalThis.crossOriginIsolated ? "likely" : null;
}

/** @param {string} url @param {"certain" | "likely"} verdict */
function corsError(url, verdict) {
  const origin = new URL(url, globalThis.location?.href).origin;
  if (verdict === "likely") {
    return new CorsError(`The model's weights at ${url} are on another origin (${origin}) and could not be read. `
      + `This page is cross-origin isolated, so ${origin} must send CORS headers ('Access-Control-Allow-Origin', `
      + "'Access-Control-Allow-Headers: Range') and 'Cross-Origin-Resource-Policy: cross-origin'; if it does, "
      + "the host is unreachable: check the URL and the connection.", { url, certain: false });
  }
  return new CorsError(`The model's weights at ${url} are on another origin (${origin}) that does not allow `
    + `this page to read them: its responses lack CORS headers. Configure ${origin} to send `
    + "'Access-Control-Allow-Origin' (and 'Access-Control-Allow-Headers: Range', plus "
    + "'Cross-Origin-Resource-Policy: cross-origin' under COEP), or host the weights with the site.",
  { url, certain: true });
}

/**
 * Stream `url` into `into` (exactly `into.byteLength` bytes expected).
 * @param {string} url
 * @param {Uint8Array} into
 * @param {FetchOptions} [options]
 * @returns {Promise<FetchStats>}
 */
export async function fetchInto(url, into, options = {}) {
  const { signal, retries = 5, backoffMs = 300, fetchImpl = globalThis.fetch.bind(globalThis),
    cacheMode = "no-store", onBytes, onRestart, label = url, scratch = { buf: null } } = options;
  const expected = into.byteLength;
  let received = 0;
  let failures = 0;
  /** @type {FetchStats} */
  const stats = { requests: 0, rangeRequests: 0 };
  /** @type {string} */
  let lastProblem = "";

  for (;;) {
    if (signal?.aborted) throw new AbortError();
    if (failures > retries) {
      throw new NetworkError(`Could not download ${label} from ${url} after ${failures} attempts `
        + `(last problem: ${lastProblem}). Check the connection and reload the page to resume.`,
      { url, attempts: failures, problem: lastProblem });
    }
    if (failures > 0) await sleep(Math.min(backoffMs * 2 ** (failures - 1), 8000) * (0.5 + Math.random() / 2), signal);
    const ranged = received > 0;
    /** @type {Response} */
    let res;
    stats.requests++;
    if (ranged) stats.rangeRequests++;
    try {
      res = await fetchImpl(url, { signal, cache: cacheMode, headers: ranged ? { Range: `bytes=${received}-` } : {} });
    } catch (e) {
      if (isAbort(e) || signal?.aborted) throw new AbortError();
      if (failures === 0) {
        const verdict = await corsVerdict(url, fetchImpl, signal);
        if (verdict) throw corsError(url, verdict);
      }
      failures++;
      lastProblem = `network error: ${/** @type {Error} */ (e).message}`;
      continue;
    }
    if (res.status === 404 || res.status === 410) {
      await res.body?.cancel();
      throw new ShardNotFoundError(`${label} is missing on the server: ${url} answered ${res.status}. `
        + "Upload every file of the model folder (manifest.json and all shard-*.bin) next to each other.",
      { url, status: res.status });
    }
    if (res.status >= 500 || res.status === 429 || res.status === 408) {
      await res.body?.cancel();
      failures++;
      lastProblem = `HTTP ${res.status}`;
      continue;
    }
    if (ranged && res.status === 200) {
      // The server ignored the Range header: start over with the full body.
      onRestart?.(received);
      received = 0;
    } else if (ranged && res.status === 206) {
      const cr = res.headers.get("Content-Range"); // readable only if the host exposes it; 206 alone is enough
      const m = cr && /bytes (\d+)-/.exec(cr);
      if (m && Number(m[1]) !== received) {
        await res.body?.cancel();
        lastProblem = `server resumed at byte ${m[1]} instead of ${received}`;
        onRestart?.(received);
        received = 0;
        failures++;
        continue;
      }
    } else if (res.status !== 200) {
      await res.body?.cancel();
      throw new ShardLoadError(`Could not download ${label}: ${url} answered HTTP ${res.status} `
        + `${res.statusText}. Check the weights' host.`, { url, status: res.status });
    }
    if (!res.body) throw new ShardLoadError(`Could not download ${label}: ${url} has no body.`, { url });

    const before = received;
    try {
      const { overflow } = await readBody(res.body, into, received, (n) => { received += n; onBytes?.(n); }, scratch);
      if (overflow) {
        throw new ShardLoadError(`${label} at ${url} is larger than the manifest says (${expected} bytes): `
          + "the shard and manifest.json come from different conversions; upload them together.",
        { url, expected });
      }
    } catch (e) {
      if (e instanceof ShardLoadError) throw e;
      if (isAbort(e) || signal?.aborted) throw new AbortError();
      lastProblem = `connection dropped at byte ${received}: ${/** @type {Error} */ (e).message}`;
      if (received === before) failures++; else failures = 0; // progress earns a fresh retry budget
      continue; // resume with a Range request
    }
    if (received === expected) return stats;
    lastProblem = `connection closed at byte ${received} of ${expected}`;
    if (received === before) failures++; else failures = 0;
  }
}

/**
 * Fetch and parse a JSON document (the manifest), with the same error classes.
 * @param {string} url @param {{ signal?: AbortSignal, fetchImpl?: typeof fetch }} [options]
 * @returns {Promise<{ json: any, text: string }>}
 */
export async function fetchJson(url, { signal, fetchImpl = globalThis.fetch.bind(globalThis) } = {}) {
  /** @type {Response} */
  let res;
  try {
    res = await fetchImpl(url, { signal, cache: "no-cache" });
  } catch (e) {
    if (isAbort(e) || signal?.aborted) throw new AbortError();
    const verdict = await corsVerdict(url, fetchImpl, signal);
    if (verdict) throw corsError(url, verdict);
    throw new NetworkError(`Could not download ${url}: ${/** @type {Error} */ (e).message}. `
      + "Check the connection and the model's URL.", { url });
  }
  if (res.status === 404 || res.status === 410) {
    throw new ShardNotFoundError(`The model manifest ${url} is missing (HTTP ${res.status}): check the model's `
      + "base URL and that manifest.json was uploaded.", { url, status: res.status });
  }
  if (!res.ok) {
    throw new ShardLoadError(`Could not download ${url}: HTTP ${res.status} ${res.statusText}.`, { url, status: res.status });
  }
  const text = await res.text();
  try {
    return { json: JSON.parse(text), text };
  } catch (e) {
    throw new ShardLoadError(`${url} is not valid JSON (${/** @type {Error} */ (e).message}).`, { url });
  }
}

/**
 * Read a response body into `into` from byte `start`. With a byte stream
 * (fetch bodies in Chromium) a BYOB reader fills one reused
 * 64 KiB scratch buffer (small, so a dropped connection loses little), so no per-chunk garbage piles up between garbage
 * collections (issue 5, item 4); otherwise the stream's own chunks are copied
 * in. The scratch, not `into`, is what BYOB reads transfer, so a failed read
 * loses only the scratch and the bytes already in `into` stay for a `Range` resume.
 * @param {ReadableStream<Uint8Array>} body
 * @param {Uint8Array} into
 * @param {number} start
 * @param {(n: number) => void} onBytes  called after each chunk (the running end is `start` + the sum)
 * @param {{ buf: Uint8Array | null }} scratch  reused between calls
 * @param {boolean} [useByob]  false for Cache Storage bodies: in Chromium 156 a BYOB read of one
 *   sometimes never settles when several are read at once (bench/load_bench.py hung at random shards
 *   of a 287-shard warm load); their default reader's chunks are large and few, so little garbage.
 * @returns {Promise<{ end: number, overflow: boolean }>}
 */
export async function readBody(body, into, start, onBytes, scratch, useByob = true) {
  let pos = start;
  /** @type {ReadableStreamBYOBReader | null} */
  let byob = null;
  if (useByob) {
    try { byob = body.getReader({ mode: "byob" }); } catch { byob = null; }
  }
  if (byob) {
    for (;;) {
      const buf = scratch.buf && scratch.buf.byteLength ? scratch.buf : new Uint8Array(2 ** 16);
      scratch.buf = null; // transferred by the read; restored from its result
      const { done, value } = await byob.read(new Uint8Array(buf.buffer, 0, buf.buffer.byteLength));
      if (value) scratch.buf = new Uint8Array(value.buffer);
      if (done || !value) return { end: pos, overflow: false };
      if (pos + value.byteLength > into.byteLength) { await byob.cancel(); return { end: pos, overflow: true }; }
      into.set(value, pos);
      pos += value.byteLength;
      onBytes(value.byteLength);
    }
  }
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { end: pos, overflow: false };
    if (pos + value.byteLength > into.byteLength) { await reader.cancel(); return { end: pos, overflow: true }; }
    into.set(value, pos);
    pos += value.byteLength;
    onBytes(value.byteLength);
    // The chunk is garbage now, but V8 may keep hundreds of MiB of such chunks before collecting them
    // (a 4.8 GB warm load peaked at 780 MiB). Detaching the chunk's buffer frees its memory at once.
    // Only a chunk that owns its whole buffer: a shared one would break the chunks after it.
    const buffer = /** @type {any} */ (value.buffer);
    if (value.byteOffset === 0 && value.byteLength === buffer.byteLength && typeof buffer.transfer === "function") {
      buffer.transfer(0);
    }
  }
}
