// The loader's user-facing failures (issue 5). Each names what failed (shard
// file, URL) and what to do, and is registered with runtime/errors.js so it
// crosses the worker boundary with its class intact.

import { SitegenRuntimeError, ShardLoadError, registerErrorClass } from "../errors.js";

/** The weights' host answered without the CORS headers a cross-origin fetch needs. */
export class CorsError extends ShardLoadError {}

/** A shard (or the manifest) is not on the server: 404 or 410. */
export class ShardNotFoundError extends ShardLoadError {}

/** The network failed (or the server kept answering 5xx) after every retry. */
export class NetworkError extends ShardLoadError {}

/** The browser's storage quota cannot hold the model. */
export class StorageQuotaError extends SitegenRuntimeError {}

for (const cls of [CorsError, ShardNotFoundError, NetworkError, StorageQuotaError]) registerErrorClass(cls);

/**
 * Warnings do not stop a load; they are reported in progress events and the
 * load's result as `{name, message}`.
 * @typedef {{ name: "StorageUnavailable" | "StorageNotPersisted" | "CacheWriteFailed", message: string }} LoaderWarning
 */
