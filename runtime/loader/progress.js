// Structured progress (issue 5, item 5): one event shape for every phase,
// with byte and shard counts, a rate over the last few seconds and an ETA.

/**
 * @typedef {"check" | "download" | "verify" | "upload" | "compile" | "ready"} Phase
 * @typedef {{ phase: Phase, bytesDone: number, bytesTotal: number, shardsDone: number, shardsTotal: number,
 *             rate: number, eta: number, source: "cache" | "network" | "file", shard?: number,
 *             warning?: import("./errors.js").LoaderWarning }} ProgressEvent
 */

const WINDOW_MS = 3000;

export class ProgressTracker {
  /**
   * @param {{ bytesTotal: number, shardsTotal: number, onProgress?: (e: ProgressEvent) => void,
   *           now?: () => number }} options
   */
  constructor({ bytesTotal, shardsTotal, onProgress, now = () => performance.now() }) {
    this.bytesTotal = bytesTotal;
    this.shardsTotal = shardsTotal;
    this.bytesDone = 0;
    this.shardsDone = 0;
    this.bytesFromCache = 0;
    this.bytesFromNetwork = 0;
    this.onProgress = onProgress;
    this.now = now;
    /** @type {[number, number][]} (time, bytesDone) samples for the rate */
    this.samples = [[now(), 0]];
    this.lastEmit = -Infinity;
  }

  /** Bytes per second over the last few seconds. */
  rate() {
    const t = this.now();
    while (this.samples.length > 2 && t - this.samples[1][0] > WINDOW_MS) this.samples.shift();
    const [t0, b0] = this.samples[0];
    return t > t0 ? ((this.bytesDone - b0) * 1000) / (t - t0) : 0;
  }

  /**
   * Count bytes read (from the network or the cache); emits at most every 100 ms.
   * @param {number} n @param {"cache" | "network"} source @param {number} shard
   */
  addBytes(n, source, shard) {
    this.bytesDone += n;
    if (source === "cache") this.bytesFromCache += n; else this.bytesFromNetwork += n;
    this.samples.push([this.now(), this.bytesDone]);
    if (this.samples.length > 4096) this.samples.splice(1, 2048);
    if (this.now() - this.lastEmit >= 100) this.emit("download", source, shard);
  }

  /** Take back bytes of an attempt that is retried from scratch. @param {number} n */
  undoBytes(n) { this.bytesDone -= n; }

  /**
   * @param {Phase} phase @param {"cache" | "network" | "file"} source @param {number} [shard]
   * @param {import("./errors.js").LoaderWarning} [warning]
   */
  emit(phase, source, shard, warning) {
    if (!this.onProgress) return;
    this.lastEmit = this.now();
    const rate = this.rate();
    const left = Math.max(0, this.bytesTotal - this.bytesDone);
    /** @type {ProgressEvent} */
    const e = { phase, bytesDone: this.bytesDone, bytesTotal: this.bytesTotal, shardsDone: this.shardsDone,
      shardsTotal: this.shardsTotal, rate, eta: rate > 0 ? left / rate : (left ? Infinity : 0), source };
    if (shard !== undefined) e.shard = shard;
    if (warning) e.warning = warning;
    this.onProgress(e);
  }
}
