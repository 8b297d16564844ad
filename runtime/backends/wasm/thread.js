// One worker of the CPU backend's thread pool (threads.js): it instantiates
// kernels-threads.wasm over the pool's shared memory, points the C stack at its
// own region, and then runs its part of each job the control block announces.
// It runs in a browser Worker or a Node worker_threads Worker alike.

import { SPLIT_KERNELS } from "./threads.js";

/** Spin this long for the next job before sleeping: a decode step's jobs come microseconds apart, but
 * a spinning worker takes a core from the caller on a busy machine (a longer spin measured 25x slower
 * decode with 2 threads on a loaded 2-core machine); waking from Atomics.wait costs tens of µs. */
const SPIN_MS = 0.2;

/**
 * @param {{ module: WebAssembly.Module, memory: WebAssembly.Memory, ctlPtr: number, stack: number, index: number }} init
 * @param {(msg: unknown) => void} reply
 */
function start({ module, memory, ctlPtr, stack, index }, reply) {
  const instance = new WebAssembly.Instance(module, { env: { memory } });
  const exports = /** @type {Record<string, any>} */ (instance.exports);
  exports.__stack_pointer.value = stack;
  const ctl = new Int32Array(memory.buffer, ctlPtr, 8);
  const args = new Float64Array(memory.buffer, ctlPtr + 32, 28);
  // The generation is read before saying ready: the caller's first job may follow at once.
  let gen = Atomics.load(ctl, 0);
  reply("ready");
  for (;;) {
    const t0 = performance.now();
    while (Atomics.load(ctl, 0) === gen) {
      if (performance.now() - t0 > SPIN_MS) Atomics.wait(ctl, 0, gen, 1000);
    }
    gen = Atomics.load(ctl, 0);
    const kernel = Atomics.load(ctl, 2);
    if (kernel < 0) return;
    const a = Array.from(args.subarray(0, Atomics.load(ctl, 3)));
    exports[SPLIT_KERNELS[kernel]](...a, index, Atomics.load(ctl, 4));
    Atomics.add(ctl, 1, 1);
    Atomics.notify(ctl, 1);
  }
}

const isNode = typeof process !== "undefined" && Boolean(process.versions?.node)
  && typeof globalThis.WorkerGlobalScope === "undefined";
if (isNode) {
  const { parentPort } = await import("node:worker_threads");
  parentPort?.once("message", (init) => start(init, (m) => parentPort.postMessage(m)));
} else {
  const scope = /** @type {any} */ (globalThis);
  scope.onmessage = (/** @type {MessageEvent} */ e) => {
    scope.onmessage = null;
    start(e.data, (m) => scope.postMessage(m));
  };
}
