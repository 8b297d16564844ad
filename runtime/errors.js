// One error class per user-facing failure of the runtime (issue 4, item 1 and 6).
//
// Every error has a stable `name`, an actionable `message` (what went wrong and
// what to do) and a plain-JSON `data` object, so it survives the worker
// boundary as `{name, message, data}` (`toJSON`) and is rebuilt on the other
// side with its class intact (`errorFromJSON`).

/** @typedef {{ name: string, message: string, data: Record<string, unknown> }} SerializedError */

/** Base class of every runtime error. */
export class SitegenRuntimeError extends Error {
  /**
   * @param {string} message
   * @param {Record<string, unknown>} [data]
   */
  constructor(message, data = {}) {
    super(message);
    this.name = new.target.name;
    /** @type {Record<string, unknown>} */
    this.data = data;
  }

  /** @returns {SerializedError} */
  toJSON() {
    return { name: this.name, message: this.message, data: this.data };
  }
}

/** The browser (or Node) has no WebGPU, or no adapter could be obtained. */
export class WebGPUUnavailableError extends SitegenRuntimeError {}

/** The device lacks a feature the model needs (e.g. `shader-f16`). */
export class MissingFeatureError extends SitegenRuntimeError {}

/** A GPU buffer the model needs exceeds a device limit that splitting cannot fix. */
export class BufferTooLargeError extends SitegenRuntimeError {}

/** The model is unlikely to fit in the device's memory. */
export class InsufficientMemoryError extends SitegenRuntimeError {}

/** The manifest is missing, of another format/version, or inconsistent. */
export class ManifestError extends SitegenRuntimeError {}

/** A shard could not be read or fetched. */
export class ShardLoadError extends SitegenRuntimeError {}

/** A shard's sha256 differs from the manifest's. */
export class ShardIntegrityError extends SitegenRuntimeError {}

/** The prompt plus the requested new tokens do not fit the context window. */
export class ContextWindowExceededError extends SitegenRuntimeError {}

/** A request parameter is invalid (names the parameter). */
export class InvalidRequestError extends SitegenRuntimeError {}

/** The engine was used after `unload()`, or while another request was running. */
export class EngineStateError extends SitegenRuntimeError {}

/** The GPU device was lost (driver reset, tab in background too long, `unload`). */
export class DeviceLostError extends SitegenRuntimeError {}

/**
 * The request was aborted through its AbortSignal. Named "AbortError" like the
 * DOMException that `fetch` throws, so callers can test one name.
 */
export class AbortError extends SitegenRuntimeError {
  /** @param {string} [message] @param {Record<string, unknown>} [data] */
  constructor(message = "The request was aborted.", data = {}) {
    super(message, data);
    this.name = "AbortError";
  }
}

const CLASSES = /** @type {Record<string, new (m: string, d?: Record<string, unknown>) => SitegenRuntimeError>} */ ({
  SitegenRuntimeError, WebGPUUnavailableError, MissingFeatureError, BufferTooLargeError,
  InsufficientMemoryError, ManifestError, ShardLoadError, ShardIntegrityError,
  ContextWindowExceededError, InvalidRequestError, EngineStateError, DeviceLostError, AbortError,
});

/**
 * Register another module's error class so `errorFromJSON` can rebuild it
 * (the loader, tokenizer and chat modules add theirs).
 * @param {new (m: string, d?: Record<string, unknown>) => SitegenRuntimeError} cls
 */
export function registerErrorClass(cls) {
  CLASSES[cls.name] = cls;
}

/**
 * Turn any thrown value into `{name, message, data}`.
 * @param {unknown} error
 * @returns {SerializedError}
 */
export function errorToJSON(error) {
  if (error instanceof SitegenRuntimeError) return error.toJSON();
  if (error instanceof Error) return { name: error.name, message: error.message, data: {} };
  return { name: "Error", message: String(error), data: {} };
}

/**
 * Rebuild an error from `{name, message, data}`, with its class when known.
 * @param {SerializedError} json
 * @returns {Error}
 */
export function errorFromJSON(json) {
  const cls = CLASSES[json.name];
  if (cls) {
    const e = new cls(json.message, json.data ?? {});
    e.name = json.name;
    return e;
  }
  const e = new Error(json.message);
  e.name = json.name;
  return e;
}

/**
 * Throw an AbortError when `signal` is aborted.
 * @param {AbortSignal | undefined | null} signal
 */
export function throwIfAborted(signal) {
  if (signal?.aborted) throw new AbortError();
}
