// The CPU backend's thread pool (issue 14, item 2): workers that instantiate
// kernels-threads.wasm over the same shared WebAssembly.Memory and split each
// matrix product's rows (and attention's heads) with the calling thread.
// Only a cross-origin isolated page has SharedArrayBuffer, so only there (and
// under Node) is there a pool; otherwise the backend runs on one thread.
//
// A job is one kernel call: the caller writes the kernel's index and its
// arguments into a control block in the shared memory, bumps the generation
// word and wakes the workers (Atomics.notify); worker i calls the kernel with
// (part i, parts) and adds one to the done word; the caller runs part 0 and
// waits for the others. postMessage would cost tens of microseconds per call,
// a decode step makes ~120 of them, so the block is polled instead: workers
// spin briefly before sleeping in Atomics.wait, the caller spins (the page's
// main thread may not block).
//
// Control block (Int32 words): [0] generation, [1] parts done, [2] kernel,
// [3] number of arguments, [4] parts (threads), [8..] arguments as float64 (from byte 32).

import { SitegenRuntimeError } from "../../errors.js";

/** Kernels a job can run (their index is what the control block holds). */
export const SPLIT_KERNELS = /** @type {const} */ (["matmul", "attention"]);
const EXIT = -1;
const MAX_ARGS = 28;
export const CONTROL_BYTES = 32 + 8 * MAX_ARGS;
/** Each worker's C stack. */
export const STACK_BYTES = 65536;

/**
 * @typedef {{ run(name: "matmul" | "attention", args: number[]): void, threads: number, destroy(): void }} ThreadPool
 */

/**
 * Start `threads - 1` workers over `kernels`' shared memory.
 * @param {import("./kernels.js").WasmKernels} kernels
 * @param {number} threads  total, the calling thread included
 * @returns {Promise<ThreadPool>}
 */
export async function createPool(kernels, threads) {
  if (!kernels.threaded) throw new SitegenRuntimeError("createPool: the kernels were not built over a shared memory.");
  const ctlPtr = kernels.alloc(CONTROL_BYTES, "the thread pool");
  const ctl = new Int32Array(kernels.memory.buffer, ctlPtr, 8);
  const args = new Float64Array(kernels.memory.buffer, ctlPtr + 32, MAX_ARGS);
  Atomics.store(ctl, 4, threads);
  const url = new URL("./thread.js", import.meta.url);
  const isNode = typeof process !== "undefined" && Boolean(process.versions?.node) && typeof window === "undefined"
    && typeof globalThis.WorkerGlobalScope === "undefined";
  /** @type {{ terminate(): unknown }[]} */
  const workers = [];
  const started = [];
  for (let i = 1; i < threads; i++) {
    const stack = kernels.alloc(STACK_BYTES, "a thread's stack") + STACK_BYTES;
    const init = { module: kernels.module, memory: kernels.memory, ctlPtr, stack, index: i };
    if (isNode) {
      const { Worker } = await import("node:worker_threads");
      // execArgv: [] so that flags of the parent (node --input-type=module -e ...) do not break the worker.
      const w = new Worker(url, { execArgv: [] });
      workers.push(w);
      started.push(new Promise((resolve, reject) => {
        // Unreferenced once started, so that a pool nobody destroyed does not keep Node alive.
        w.once("message", () => { w.unref(); resolve(undefined); });
        w.once("error", reject);
        w.postMessage(init);
      }));
    } else {
      const w = new Worker(url, { type: "module", name: `sitegen-cpu-${i}` });
      workers.push(w);
      started.push(new Promise((resolve, reject) => {
        w.onmessage = resolve;
        w.onerror = (e) => reject(new SitegenRuntimeError(`A CPU thread failed to start: ${e.message}`));
        w.postMessage(init);
      }));
    }
  }
  try {
    await Promise.all(started);
  } catch (e) {
    workers.forEach((w) => w.terminate());
    throw e;
  }
  const exports = /** @type {Record<string, Function>} */ (/** @type {unknown} */ (kernels.exports));
  const canBlock = isNode || typeof globalThis.WorkerGlobalScope !== "undefined";
  let destroyed = false;
  return {
    threads,
    run(name, a) {
      if (destroyed) throw new SitegenRuntimeError("The CPU thread pool was stopped.");
      const kernel = SPLIT_KERNELS.indexOf(name);
      if (a.length > MAX_ARGS) throw new SitegenRuntimeError(`thread pool: ${name} has too many arguments.`);
      args.set(a);
      Atomics.store(ctl, 2, kernel);
      Atomics.store(ctl, 3, a.length);
      Atomics.store(ctl, 1, 0);
      Atomics.add(ctl, 0, 1);
      Atomics.notify(ctl, 0);
      exports[name](...a, 0, threads);
      // The workers' parts are usually microseconds behind: spin. A worker the OS has descheduled (a
      // busy machine) can be milliseconds behind: then sleep until it reports, where this thread may
      // block (a worker, or Node; a page's main thread may not, and keeps spinning).
      for (let spins = 0, done; (done = Atomics.load(ctl, 1)) < threads - 1;) {
        if (++spins > 4096 && canBlock) Atomics.wait(ctl, 1, done, 1);
      }
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      Atomics.store(ctl, 2, EXIT);
      Atomics.add(ctl, 0, 1);
      Atomics.notify(ctl, 0);
      workers.forEach((w) => w.terminate());
    },
  };
}
