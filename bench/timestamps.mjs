// Device time of recorded GPU work from timestamp queries, for the micro-benchmarks
// (bench/kernel_bench.mjs, bench/matvec_lab.mjs): the work is recorded twice as a warm-up, then `reps`
// times, each in a compute pass of its own with timestamps at its start and end; the median in ms.

/**
 * @param {GPUDevice} device a device with the "timestamp-query" feature
 * @param {number} reps
 */
export function passTimer(device, reps) {
  const qs = device.createQuerySet({ type: "timestamp", count: 2 * reps });
  const resolve = device.createBuffer({ size: 16 * reps, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 16 * reps, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  /** Median ms of one pass of `record`. @param {(p: GPUComputePassEncoder) => void} record */
  return async function time(record) {
    for (let w = 0; w < 2; w++) {
      const enc = device.createCommandEncoder();
      const p = enc.beginComputePass(); record(p); p.end();
      device.queue.submit([enc.finish()]);
    }
    const enc = device.createCommandEncoder();
    for (let i = 0; i < reps; i++) {
      const p = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      record(p);
      p.end();
    }
    enc.resolveQuerySet(qs, 0, 2 * reps, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * reps);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const t = new BigInt64Array(read.getMappedRange().slice(0));
    read.unmap();
    const ms = [];
    for (let i = 0; i < reps; i++) ms.push(Number(t[2 * i + 1] - t[2 * i]) / 1e6);
    ms.sort((a, b) => a - b);
    return ms[reps >> 1];
  };
}
