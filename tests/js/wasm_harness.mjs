// Test harness for the Wasm kernels (tests/test_wasm_kernels.py): reads one job as JSON on stdin,
//   { threads, buffers: { name: base64 | { bytes: n } }, calls: [[kernel, ...args]], read: { name: count } }
// where an argument {"buf": name} is the byte offset of that buffer in the kernels' memory and
// {"buf": name, "plus": n} that offset plus n bytes. `matmul` and `attention` run through the
// thread pool (part, parts appended). Prints { name: base64 of the buffer's first bytes } for `read`.
import { WasmKernels } from "../../runtime/backends/wasm/kernels.js";
import { createPool } from "../../runtime/backends/wasm/threads.js";

let text = "";
for await (const chunk of process.stdin) text += chunk;
const job = JSON.parse(text);
const threads = job.threads ?? 1;
const k = await WasmKernels.create({ threaded: threads > 1 });
if (threads > 1) k.pool = await createPool(k, threads);
const at = {};
for (const [name, b] of Object.entries(job.buffers)) {
  const bytes = typeof b === "string" ? Buffer.from(b, "base64") : new Uint8Array(b.bytes);
  at[name] = k.alloc(bytes.length + 16, name);
  k.u8.set(bytes, at[name]);
}
const value = (a) => (a && typeof a === "object" ? at[a.buf] + (a.plus ?? 0) : a);
const results = [];
for (const [kernel, ...args] of job.calls) {
  const v = args.map(value);
  if (kernel === "matmul" || kernel === "attention") k.split(kernel, v);
  else results.push(k.exports[kernel](...v));
}
const out = { results };
for (const [name, n] of Object.entries(job.read ?? {})) out[name] = Buffer.from(k.u8.subarray(at[name], at[name] + n)).toString("base64");
k.pool?.destroy();
console.log(JSON.stringify(out));
