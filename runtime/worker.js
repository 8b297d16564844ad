// The model's dedicated worker (issue 6, item 1): the engine loads and
// generates here, so the page's main thread only renders. The page talks to
// it through runtime/protocol.js; this file is the one message handler.
//
//   new Worker(new URL("../worker.js", import.meta.url), { type: "module" })

import { createEngine } from "./engine.js";
import { AbortError, DeviceLostError, EngineStateError } from "./errors.js";
import { REQUEST_KINDS, errorPayload, isMessage, message } from "./protocol.js";

/** @typedef {import("./protocol.js").Request} Request */

const scope = /** @type {any} */ (globalThis);

/** @type {import("./engine.js").Engine | null} */
let engine = null;
/** @type {Promise<unknown> | null} */
let loading = null;
/** Running generations by request id, to abort them. @type {Map<number, AbortController>} */
const running = new Map();

/** @param {string} kind @param {number} id @param {any} payload */
function post(kind, id, payload) {
  scope.postMessage(message(kind, id, payload));
}

/** @param {Extract<Request, { kind: "load" }>} req */
async function load(req) {
  if (engine) {
    // Forget it first: its device's "lost" promise settles during unload, and must not count as a loss.
    const old = engine;
    engine = null;
    await old.unload().catch(() => {});
  }
  const { manifestUrl, shaderBase, shardBase, contextLength, backend } = req.payload;
  // Shards on another origin than the manifest (the spec's models.<name>.host.base_url, issue 15).
  const loader = shardBase ? (await import("./loader/index.js")).createLoader({ baseUrl: shardBase }) : undefined;
  const e = await createEngine({
    // A page runs on WebGPU when it can, else on the CPU (issue 14), unless the spec forces one.
    manifestUrl, shaderBase, contextLength, loader, backend: backend ?? "auto",
    onProgress: (event) => post("progress", req.id, { event }),
  });
  engine = e;
  // A lost device (driver reset, GPU process crash) is reported at once, not at the next request,
  // so the page can reload the model while the visitor is still reading.
  e.backend.lost.then((info) => {
    // Our own unload forgets the engine before destroying its device; any other loss, a
    // destroy() from elsewhere included, is a failure the page recovers from.
    if (engine !== e) return;
    engine = null;
    post("lost", 0, errorPayload(new DeviceLostError(`The GPU device was lost (${info.reason}: ${info.message}).`,
      { reason: info.reason })));
  });
  post("ready", req.id, { stats: e.stats, contextLength: e.contextLength });
}

/** @param {Extract<Request, { kind: "generate" }>} req */
async function generate(req) {
  if (loading) await loading.catch(() => {});
  if (!engine) throw new EngineStateError("The model is not loaded yet: wait for it to load, then send again.");
  const controller = new AbortController();
  running.set(req.id, controller);
  try {
    const { messages, settings } = req.payload;
    const stream = /** @type {AsyncIterable<any>} */ (await engine.chat.completions.create({ ...settings, messages, stream: true },
      { signal: controller.signal }));
    let finishReason = "stop";
    let usage = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      const text = choice.delta?.content ?? "";
      const tokens = choice.token_ids ?? [];
      if (text || tokens.length) post("chunk", req.id, { text, tokens });
      if (choice.finish_reason) finishReason = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    post("done", req.id, { finishReason, usage });
  } catch (e) {
    if (e instanceof AbortError || /** @type {Error} */ (e)?.name === "AbortError") {
      post("done", req.id, { finishReason: "abort", usage: null });
    } else {
      throw e;
    }
  } finally {
    running.delete(req.id);
  }
}

/** @param {Request} req */
async function handle(req) {
  switch (req.kind) {
    case "load":
      loading = load(req);
      try { await loading; } finally { loading = null; }
      return;
    case "generate":
      return generate(req);
    case "abort":
      running.get(req.payload.target)?.abort();
      return;
    case "unload":
      for (const c of running.values()) c.abort();
      if (engine) {
        const old = engine;
        engine = null;
        await old.unload();
      }
      post("done", req.id, { finishReason: "unload", usage: null });
      return;
  }
}

scope.addEventListener("message", (/** @type {MessageEvent} */ e) => {
  if (!isMessage(e.data, REQUEST_KINDS)) return;
  const req = /** @type {Request} */ (e.data);
  handle(req).catch((error) => post("error", req.id, errorPayload(error)));
});
