// The runtime's public API: one list of re-exports (other modules add theirs here).
export { createEngine, Engine } from "./engine.js";
export { IncrementalDecoder } from "./tokenizer/streaming.js";
export {
  SitegenRuntimeError, WebGPUUnavailableError, MissingFeatureError, BufferTooLargeError, InsufficientMemoryError,
  ManifestError, ShardLoadError, ShardIntegrityError, ContextWindowExceededError, InvalidRequestError,
  EngineStateError, DeviceLostError, AbortError, errorToJSON, errorFromJSON, registerErrorClass,
} from "./errors.js";
export {
  resolveSamplingParams, sampleToken, createRng, StopStringMatcher, commonPrefixLength, DEFAULT_SAMPLING,
} from "./sampling.js";
