// Two checkouts' runtimes on one model in one process: the all-position logits of the same prompt
// (300 tokens: prefill chunks of 256 and 44) compared, as max |diff| / range. How a kernel change
// measured on the GPU machine is checked there against the runtime before it (no oracle needed:
// the runtime before is the one the parity tests hold).
//
//   node bench/compare_runtimes.mjs MODEL_DIR RUNTIME_A RUNTIME_B   (checkout roots, e.g. . and .before)
import path from "node:path";
import { pathToFileURL } from "node:url";

const [, , modelDir, ...roots] = process.argv;
if (!modelDir || roots.length !== 2) {
  console.error("usage: node bench/compare_runtimes.mjs MODEL_DIR RUNTIME_A RUNTIME_B");
  process.exit(2);
}
const rows = [];
for (const root of roots) {
  const { createEngine } = await import(pathToFileURL(path.resolve(root, "runtime/engine.js")).href);
  const e = await createEngine({ modelDir, contextLength: 512, warmup: false });
  const ids = Array.from({ length: 300 }, (_, i) => (i * 7919 + 13) % e.config.vocab_size);
  rows.push(await e.logits(ids));
  await e.unload();
}
const [a, b] = rows;
let d = 0, lo = Infinity, hi = -Infinity;
for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); lo = Math.min(lo, b[i]); hi = Math.max(hi, b[i]); }
console.log(JSON.stringify({ runtimes: roots, values: a.length, max_abs_diff: d, range: hi - lo, relative: d / (hi - lo) }));
process.exit(0);
