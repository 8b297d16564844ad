// Shard integrity (issue 5, item 2): sha256 through WebCrypto, which the
// browser runs off the main thread. Needs a secure context (https or localhost).

import { SitegenRuntimeError } from "../errors.js";

/**
 * Lowercase hex sha256 of `bytes` (only the view's bytes, not its whole buffer).
 * @param {Uint8Array} bytes
 * @returns {Promise<string>}
 */
export async function sha256Hex(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new SitegenRuntimeError("This page cannot check the model's integrity: crypto.subtle is missing, "
      + "which happens when a page is not served over https (or from localhost). Serve the site over https.",
    {});
  }
  const digest = new Uint8Array(await subtle.digest("SHA-256", /** @type {Uint8Array<ArrayBuffer>} */ (bytes)));
  let hex = "";
  for (const b of digest) hex += b.toString(16).padStart(2, "0");
  return hex;
}
