// A loader source reading a converted model from a folder (Node only).
// It implements the loader interface of docs/internals.md:
//   loader.forEachShard({ manifest, onShard, signal, onProgress })
// and checks each shard's size and sha256 against the manifest before use.

import { readFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ManifestError, ShardIntegrityError, ShardLoadError, throwIfAborted } from "../errors.js";

/**
 * Read and check `DIR/manifest.json`.
 * @param {string} dir
 * @returns {Promise<any>}
 */
export async function readManifestFile(dir) {
  const path = join(dir, "manifest.json");
  let text;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new ManifestError(
      `${path}: cannot read the model manifest (${/** @type {Error} */ (e).message}); ` +
      "point --model at a folder written by `sitegen convert`.", { path });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ManifestError(`${path}: not valid JSON (${/** @type {Error} */ (e).message}).`, { path });
  }
}

/**
 * @param {string} dir  the model folder (manifest.json + shard files)
 * @param {{ verify?: boolean }} [options]  verify: check sha256 (default true)
 */
export function createFileLoader(dir, { verify = true } = {}) {
  return {
    /**
     * @param {{ manifest: any, onShard: (s: { index: number, bytes: Uint8Array, fromCache: boolean }) => Promise<void> | void,
     *           signal?: AbortSignal, onProgress?: (e: any) => void }} args
     */
    async forEachShard({ manifest, onShard, signal, onProgress }) {
      const shards = /** @type {{file: string, bytes: number, sha256: string}[]} */ (manifest.shards);
      const bytesTotal = shards.reduce((a, s) => a + s.bytes, 0);
      let bytesDone = 0;
      const start = Date.now();
      for (let index = 0; index < shards.length; index++) {
        throwIfAborted(signal);
        const shard = shards[index];
        const path = join(dir, shard.file);
        let bytes;
        try {
          bytes = new Uint8Array(await readFile(path));
        } catch (e) {
          throw new ShardLoadError(`${path}: cannot read shard ${index} (${/** @type {Error} */ (e).message}); ` +
            "convert the model again.", { path, index });
        }
        if (bytes.length !== shard.bytes) {
          throw new ShardIntegrityError(`${path}: shard ${index} has ${bytes.length} bytes, the manifest says ` +
            `${shard.bytes}; the folder is incomplete or from another conversion: convert the model again.`,
            { path, index, expected: shard.bytes, actual: bytes.length });
        }
        if (verify) {
          const digest = createHash("sha256").update(bytes).digest("hex");
          if (digest !== shard.sha256) {
            throw new ShardIntegrityError(`${path}: sha256 ${digest} differs from the manifest's ${shard.sha256}; ` +
              "the file is corrupt or from another conversion: convert the model again.",
              { path, index, expected: shard.sha256, actual: digest });
          }
        }
        // Reported when read and verified, before the engine uploads it.
        bytesDone += bytes.length;
        const elapsed = (Date.now() - start) / 1000;
        const rate = elapsed > 0 ? bytesDone / elapsed : 0;
        onProgress?.({ phase: "download", bytesDone, bytesTotal, shardsDone: index + 1, shardsTotal: shards.length,
          rate, eta: rate > 0 ? (bytesTotal - bytesDone) / rate : 0, source: "file" });
        await onShard({ index, bytes, fromCache: false });
      }
    },
  };
}
