// WebGPU under Node through npm `webgpu` (Dawn). Node-only: the browser never
// imports this file.
//
// With no GPU, Dawn runs on a software Vulkan adapter (SwiftShader), which
// needs VK_ICD_FILENAMES and LD_LIBRARY_PATH set *before* the process starts:
//   VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json LD_LIBRARY_PATH=/usr/lib/chromium

import { WebGPUUnavailableError } from "../../errors.js";

/** @type {GPU | null} */
let gpu = null; // module-level: dawn.node crashes if its GPU object is collected

/**
 * The process-wide `GPU` object (navigator.gpu's twin).
 * @returns {Promise<GPU>}
 */
export async function getNodeGPU() {
  if (gpu) return gpu;
  /** @type {any} */
  let mod;
  try {
    mod = await import("webgpu");
  } catch (e) {
    throw new WebGPUUnavailableError(
      "WebGPU for Node is missing: install the dev dependencies with `npm install` (package `webgpu`).",
      { cause: String(e) });
  }
  Object.assign(globalThis, mod.globals); // GPUBufferUsage, GPUMapMode, ... as in a browser
  // SITEGEN_DAWN_FLAGS: Dawn options, comma-separated, e.g. "disable-dawn-features=timestamp_quantization"
  // (timestamps are rounded to ~65 µs by default, too coarse to time one kernel: bench --profile).
  const flags = (globalThis.process?.env?.SITEGEN_DAWN_FLAGS ?? "").split(",").map((f) => f.trim()).filter(Boolean);
  gpu = /** @type {GPU} */ (mod.create(flags));
  return gpu;
}
