// The Wasm kernels' host side (issue 14): the compiled module (kernels.wasm, or
// kernels-threads.wasm over a shared memory for the thread pool), the one
// linear memory and a bump allocator over it, and a typed wrapper per kernel
// of src/kernels.c. Everything the model holds (weights, KV caches,
// activations) lives in that memory; JavaScript keeps only byte offsets.
//
// Memory layout: [0, 64 KiB) the C stack of the calling thread (--stack-first),
// then allocations in call order, each 64-byte aligned: the thread pool's
// control block and stacks, the weights (the shard stream, byte for byte),
// then what compile() allocates. The memory grows as allocations need it;
// wasm32 addresses 4 GiB at most (see WASM32_LIMIT and docs: memory64).

import { InsufficientMemoryError, SitegenRuntimeError } from "../../errors.js";

/** Bytes a wasm32 memory can address (65536 pages of 64 KiB). */
export const WASM32_LIMIT = 2 ** 32;
const PAGE = 65536;
/** Storage type codes of src/kernels.c. */
export const DTYPE = { f32: 0, f16: 1, q8: 2, q4: 3 };
/** Activation codes of src/kernels.c. */
export const ACT = { none: 0, silu: 1, gelu_tanh: 2, gelu: 3 };

/** @typedef {{ matmul: Function, deinterleave32: Function, quantize_x16: Function, embed: Function, norm: Function, rope: Function,
 *   attention: Function, topk: Function, __stack_pointer: WebAssembly.Global, __heap_base: WebAssembly.Global }} KernelExports */

/** @type {Map<string, Promise<WebAssembly.Module>>} */
const modules = new Map();

/**
 * The compiled kernels module (compiled once per page or process).
 * @param {boolean} threaded  the shared-memory build
 * @returns {Promise<WebAssembly.Module>}
 */
export function kernelsModule(threaded) {
  const file = threaded ? "kernels-threads.wasm" : "kernels.wasm";
  let m = modules.get(file);
  if (!m) {
    const url = new URL(`./${file}`, import.meta.url);
    m = (async () => {
      if (url.protocol === "file:") {
        const { readFile } = await import("node:fs/promises");
        const { fileURLToPath } = await import("node:url");
        return WebAssembly.compile(await readFile(fileURLToPath(url)));
      }
      const response = await fetch(url);
      if (!response.ok) {
        throw new SitegenRuntimeError(`Cannot load the CPU kernels (${url.href}: HTTP ${response.status}): ` +
          "rebuild the site so that its runtime folder is complete.", { url: url.href, status: response.status });
      }
      // Streaming compilation needs the server to send application/wasm; fall back to bytes otherwise.
      if (response.headers.get("content-type")?.startsWith("application/wasm") && WebAssembly.compileStreaming) {
        return WebAssembly.compileStreaming(response);
      }
      return WebAssembly.compile(await response.arrayBuffer());
    })();
    m.catch(() => modules.delete(file));
    modules.set(file, m);
  }
  return m;
}

/** @param {number} n @param {number} a */
const alignUp = (n, a) => Math.ceil(n / a) * a;

/** @param {number} n */
export function formatBytes(n) {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * One linear memory with the kernels instantiated over it, and a bump allocator.
 */
export class WasmKernels {
  /**
   * @param {{ threaded?: boolean, limit?: number }} [o]  threaded: a shared memory and the
   *   threads build; limit: the most bytes the memory may grow to (default 4 GiB)
   */
  static async create({ threaded = false, limit = WASM32_LIMIT } = {}) {
    const module = await kernelsModule(threaded);
    const maxPages = Math.min(65536, Math.floor(limit / PAGE));
    /** @type {WebAssembly.Memory} */
    let memory;
    let pagesGranted = maxPages;
    if (threaded) {
      // A shared memory reserves its maximum up front: a 32-bit browser may refuse 4 GiB; ask
      // for less then (preflight checks the model against what was granted).
      let pages = maxPages;
      for (;;) {
        try {
          memory = new WebAssembly.Memory({ initial: 2, maximum: pages, shared: true });
          pagesGranted = pages;
          break;
        } catch (e) {
          if (pages <= 4096) throw new InsufficientMemoryError("This browser refused a shared WebAssembly memory " +
            `(${/** @type {Error} */ (e).message}): close other tabs, or load the page without cross-origin isolation (one thread).`);
          pages = Math.floor(pages / 2);
        }
      }
    } else {
      memory = new WebAssembly.Memory({ initial: 2, maximum: maxPages });
    }
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    return new WasmKernels(module, memory, /** @type {any} */ (instance.exports), threaded, pagesGranted * PAGE);
  }

  /**
   * @param {WebAssembly.Module} module @param {WebAssembly.Memory} memory @param {KernelExports} exports
   * @param {boolean} threaded @param {number} limit  the most bytes the memory can grow to
   */
  constructor(module, memory, exports, threaded, limit) {
    this.module = module;
    this.memory = memory;
    this.exports = exports;
    this.threaded = threaded;
    /** The most bytes this memory can hold (a shared memory's maximum is fixed at creation). */
    this.limit = limit;
    /** First free byte. */
    this.top = alignUp(Number(exports.__heap_base.value), 64);
    /** @type {import("./threads.js").ThreadPool | null} */
    this.pool = null;
  }

  /**
   * Allocate `bytes` (64-byte aligned), growing the memory; InsufficientMemoryError when it cannot.
   * @param {number} bytes @param {string} what  for the error message
   * @returns {number} the byte offset
   */
  alloc(bytes, what) {
    const at = this.top;
    const end = alignUp(at + Math.max(bytes, 4), 64);
    if (end > this.limit) {
      throw new InsufficientMemoryError(`The CPU backend cannot allocate ${formatBytes(bytes)} for ${what}: the model ` +
        `would need ${formatBytes(end)} of WebAssembly memory, more than its ${formatBytes(this.limit)} limit. Use a ` +
        "smaller or more quantized model, or a shorter contextLength.", { bytes: end, limit: this.limit });
    }
    const have = this.memory.buffer.byteLength;
    if (end > have) {
      try {
        this.memory.grow(Math.ceil((end - have) / PAGE));
      } catch (e) {
        throw new InsufficientMemoryError(`The browser refused to grow the CPU backend's memory to ${formatBytes(end)} ` +
          `(for ${what}; ${/** @type {Error} */ (e).message}): close other tabs or apps, or use a smaller model.`,
        { bytes: end });
      }
    }
    this.top = end;
    return at;
  }

  /** Bytes in use. */
  get used() { return this.top; }

  /** A fresh view (a grown memory replaces its buffer). */
  get u8() { return new Uint8Array(this.memory.buffer); }
  /** @param {number} ptr @param {number} n */
  f32(ptr, n) { return new Float32Array(this.memory.buffer, ptr, n); }
  /** @param {number} ptr @param {number} n */
  i32(ptr, n) { return new Int32Array(this.memory.buffer, ptr, n); }

  /**
   * Run a kernel that takes (part, parts) last: on the pool's threads when there is one,
   * else as one part.
   * @param {"matmul" | "attention"} name @param {number[]} args
   */
  split(name, args) {
    if (this.pool) this.pool.run(name, args);
    else /** @type {Function} */ (this.exports[name])(...args, 0, 1);
  }

  /**
   * out[t, r] (+)= epilogue(x[t] · w[r]): see matmul in src/kernels.c. A q4 product reads x
   * deinterleaved per 32 columns from `xp` (this call writes it there).
   * @param {{ out: number, os: number, x: number, xs: number, T: number, rows: number, cols: number,
   *   dtype: keyof typeof DTYPE, w: number, scales: number, bias?: number, gate?: number, gateScales?: number,
   *   gateBias?: number, act?: keyof typeof ACT, softcap?: number, accumulate?: boolean, xp: number,
   *   xq: number }} o  xp: scratch for q4's deinterleaved x (T·cols floats); xq: scratch for one token of
   *   q4/q8 in 16-bit fixed point (quantize_x16: 2·cols + cols/4 bytes), the decode path's integer dots
   */
  matmul(o) {
    let x = o.x, xs = o.xs;
    if (o.dtype === "q4") {
      if (xs !== o.cols) throw new SitegenRuntimeError("matmul: q4 needs dense activation rows.");
      this.exports.deinterleave32(o.xp, o.x, o.T * o.cols);
      x = o.xp;
    }
    const int16 = o.T === 1 && (o.dtype === "q4" || o.dtype === "q8");
    if (int16) this.exports.quantize_x16(o.xq, x, o.cols);
    this.split("matmul", [o.out, o.os, x, xs, o.T, o.rows, o.cols, DTYPE[o.dtype], o.w, o.scales, o.bias ?? 0,
      o.gate ?? 0, o.gateScales ?? 0, o.gateBias ?? 0, ACT[o.act ?? "none"], o.softcap ?? 0, o.accumulate ? 1 : 0,
      int16 ? o.xq : 0]);
  }
}
