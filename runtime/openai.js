// The OpenAI-style surface of the engine (issue 10, item 6): request defaults from the
// manifest, `usage` with timings, and the `chat.completion.chunk` stream. The engine's
// generation loop (runtime/engine.js) produces GenerateStep/GenerateResult; this module only
// shapes them as OpenAI's chat completions API does.

/**
 * @typedef {import("./engine.js").GenerateStep} GenerateStep
 * @typedef {import("./engine.js").GenerateResult} GenerateResult
 */

/** @param {any} manifest */
export function generationDefaults(manifest) {
  const g = manifest.generation ?? {};
  /** @type {Record<string, number>} */
  const d = {};
  if (typeof g.temperature === "number") d.temperature = g.temperature;
  if (typeof g.top_p === "number") d.topP = g.top_p;
  if (typeof g.top_k === "number") d.topK = g.top_k;
  if (typeof g.min_p === "number") d.minP = g.min_p;
  if (typeof g.repetition_penalty === "number") d.repetitionPenalty = g.repetition_penalty;
  return d;
}

/** @param {GenerateResult} r */
export function usageOf(r) {
  return {
    prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens,
    prompt_tokens_details: { cached_tokens: r.cachedTokens },
    timings: {
      prefill_ms: r.prefillMs, decode_ms: r.decodeMs,
      prefill_tokens_per_s: r.prefillTokensPerSecond, decode_tokens_per_s: r.decodeTokensPerSecond,
    },
  };
}

/**
 * @param {AsyncGenerator<GenerateStep, GenerateResult>} gen
 * @param {{ id: string, created: number, model: string }} meta
 */
export async function* completionChunks(gen, meta) {
  const base = { id: meta.id, object: "chat.completion.chunk", created: meta.created, model: meta.model };
  yield { ...base, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] };
  let r;
  while (!(r = await gen.next()).done) {
    const step = r.value;
    yield { ...base, choices: [{ index: 0, delta: { content: step.text }, token_ids: step.tokenId >= 0 ? [step.tokenId] : [],
      finish_reason: null }] };
  }
  yield { ...base, choices: [{ index: 0, delta: {}, finish_reason: r.value.finishReason }], usage: usageOf(r.value) };
}
