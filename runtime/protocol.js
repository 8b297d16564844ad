// The page ↔ worker message protocol (issue 6, item 1).
//
// Every message is a tagged union `{kind, id, payload}`. `id` ties a reply to
// the request that caused it (0 for events nobody asked for, such as "lost").
// Errors cross the boundary as `{name, message, data}` (runtime/errors.js) and
// are rebuilt as instances of their class on the page.
//
//   page → worker                          worker → page
//   load     {manifestUrl, shaderBase,     progress {event}          (id of the load)
//             shardBase?, contextLength?,  ready    {stats, contextLength}
//             backend?}
//   generate {messages, settings}          chunk    {text, tokens}   (id of the generate)
//   abort    {target}  (id of a generate)  done     {finishReason, usage}
//   unload   {}                            error    {error: {name, message, data}}
//                                          lost     {error}           (the GPU device was lost)

import { errorFromJSON, errorToJSON } from "./errors.js";
// The loader's error classes register themselves with errors.js on import, so
// that a CorsError thrown in the worker is a CorsError on the page too.
import "./loader/errors.js";
import "./chat.js"; // ChatFormatError, likewise

/**
 * @typedef {{ role: "system" | "user" | "assistant", content: string }} ChatMessage
 * @typedef {{ temperature?: number, top_p?: number, top_k?: number, min_p?: number,
 *   repetition_penalty?: number, max_tokens?: number, stop?: string[], seed?: number | null,
 *   response_format?: { type: string, json_schema?: { name?: string, schema: unknown } } }} Settings
 * @typedef {{ kind: "load", id: number, payload: { manifestUrl: string, shaderBase?: string, shardBase?: string, contextLength?: number,
 *     backend?: "auto" | "webgpu" | "wasm" } }
 *   | { kind: "generate", id: number, payload: { messages: ChatMessage[], settings: Settings } }
 *   | { kind: "abort", id: number, payload: { target: number } }
 *   | { kind: "unload", id: number, payload: {} }} Request
 * @typedef {{ kind: "progress", id: number, payload: { event: any } }
 *   | { kind: "ready", id: number, payload: { stats: any, contextLength: number } }
 *   | { kind: "chunk", id: number, payload: { text: string, tokens: number[] } }
 *   | { kind: "done", id: number, payload: { finishReason: string, usage: any } }
 *   | { kind: "error", id: number, payload: { error: import("./errors.js").SerializedError } }
 *   | { kind: "lost", id: number, payload: { error: import("./errors.js").SerializedError } }} Reply
 */

export const REQUEST_KINDS = Object.freeze(["load", "generate", "abort", "unload"]);
export const REPLY_KINDS = Object.freeze(["progress", "ready", "chunk", "done", "error", "lost"]);

/**
 * Build one message.
 * @template {string} K @template P
 * @param {K} kind @param {number} id @param {P} payload
 */
export function message(kind, id, payload) {
  return { kind, id, payload };
}

/** @param {unknown} error */
export function errorPayload(error) {
  return { error: errorToJSON(error) };
}

/**
 * Is `data` a well-formed message of one of `kinds`? (Anything else is dropped:
 * a worker must not act on a message it does not understand.)
 * @param {unknown} data @param {readonly string[]} kinds
 */
export function isMessage(data, kinds) {
  if (!data || typeof data !== "object") return false;
  const m = /** @type {any} */ (data);
  return typeof m.kind === "string" && kinds.includes(m.kind) && Number.isInteger(m.id)
    && m.payload !== null && typeof m.payload === "object";
}

/**
 * The page's side: a client of a worker that speaks this protocol.
 *
 *   const client = new WorkerClient(worker);
 *   await client.load({ manifestUrl }, (event) => showProgress(event));
 *   const stream = client.generate({ messages, settings });
 *   for await (const chunk of stream) ...;   stream.abort();   await stream.result
 */
export class WorkerClient {
  /** @param {Worker} worker */
  constructor(worker) {
    this.worker = worker;
    this.nextId = 1;
    /** @type {Map<number, (reply: Reply) => void>} */
    this.handlers = new Map();
    /** @type {((error: Error) => void) | null} called when the GPU device is lost */
    this.onLost = null;
    worker.addEventListener("message", (e) => {
      if (!isMessage(e.data, REPLY_KINDS)) return;
      const reply = /** @type {Reply} */ (e.data);
      if (reply.kind === "lost") {
        this.onLost?.(errorFromJSON(reply.payload.error));
        return;
      }
      this.handlers.get(reply.id)?.(reply);
    });
    // A worker that fails to start (a syntax error, a blocked script) fails every pending request.
    worker.addEventListener("error", (e) => {
      const error = new Error(`The model's worker failed: ${e.message || "it could not start"}.`);
      error.name = "WorkerError";
      for (const [id, handler] of this.handlers) {
        handler(/** @type {Reply} */ (message("error", id, errorPayload(error))));
      }
    });
  }

  /** @param {Request["kind"]} kind @param {any} payload @param {(r: Reply) => void} handler */
  _send(kind, payload, handler) {
    const id = this.nextId++;
    this.handlers.set(id, handler);
    this.worker.postMessage(message(kind, id, payload));
    return id;
  }

  /**
   * Load the model; resolves with the engine's stats when ready.
   * @param {{ manifestUrl: string, shaderBase?: string, shardBase?: string, contextLength?: number,
   *   backend?: "auto" | "webgpu" | "wasm" }} payload  backend: runtime/backend.js (the spec's models.<name>.backend)
   * @param {(event: any) => void} [onProgress]
   * @returns {Promise<{ stats: any, contextLength: number }>}
   */
  load(payload, onProgress) {
    return new Promise((resolve, reject) => {
      const id = this._send("load", payload, (reply) => {
        if (reply.kind === "progress") onProgress?.(reply.payload.event);
        else if (reply.kind === "ready") { this.handlers.delete(id); resolve(reply.payload); }
        else if (reply.kind === "error") { this.handlers.delete(id); reject(errorFromJSON(reply.payload.error)); }
      });
    });
  }

  /**
   * Start a completion. The returned stream is an async iterator of
   * `{text, tokens}` chunks; `result` resolves with `{finishReason, usage}`
   * (finishReason "abort" after `abort()`), or rejects with the rebuilt error.
   * @param {{ messages: ChatMessage[], settings: Settings }} payload
   */
  generate(payload) {
    /** @type {{ text: string, tokens: number[] }[]} */
    const queue = [];
    /** @type {(() => void) | null} */
    let wake = null;
    let finished = false;
    /** @type {(v: { finishReason: string, usage: any }) => void} */
    let resolveResult = () => {};
    /** @type {(e: Error) => void} */
    let rejectResult = () => {};
    const result = new Promise((resolve, reject) => { resolveResult = resolve; rejectResult = reject; });
    // The iterator reports the error; `result` must not also be an unhandled rejection.
    result.catch(() => {});
    const id = this._send("generate", payload, (reply) => {
      if (reply.kind === "chunk") queue.push(reply.payload);
      else if (reply.kind === "done") { finished = true; this.handlers.delete(id); resolveResult(reply.payload); }
      else if (reply.kind === "error") {
        finished = true;
        this.handlers.delete(id);
        rejectResult(errorFromJSON(reply.payload.error));
      } else return;
      wake?.();
    });
    const client = this;
    return {
      id,
      result,
      abort() {
        if (!finished) client.worker.postMessage(message("abort", client.nextId++, { target: id }));
      },
      async *[Symbol.asyncIterator]() {
        for (;;) {
          if (queue.length) { yield /** @type {{ text: string, tokens: number[] }} */ (queue.shift()); continue; }
          if (finished) { await result; return; }
          await new Promise((resolve) => { wake = () => { wake = null; resolve(undefined); }; });
        }
      },
    };
  }

  /** Free the model's GPU memory; resolves when done. */
  unload() {
    return new Promise((resolve) => {
      const id = this._send("unload", {}, () => { this.handlers.delete(id); resolve(undefined); });
    });
  }
}
