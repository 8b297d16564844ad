// The GPU upload plan (issue 5, item 4): where every byte of the shard stream
// goes in GPU memory, computed once from the manifest's tensor table.
//
// Each tensor gets one GPU buffer per *part*. A tensor fits in one part unless
// it is larger than the device's `maxStorageBufferBindingSize` (or
// `maxBufferSize`); then it is split by rows, which the weights format makes
// cheap: a row range `[r0, r1)` is one contiguous slice of the `q` plane and
// one of the `scales` plane (docs/weights-format.md). A part's buffer holds its
// rows' codes at byte 0 and its rows' scales at `scalesOffset` (256-aligned),
// so each part is a self-contained weight for the kernels:
// `{buffer, dtype, rows, cols, scalesOffset}`.
//
// A tensor group (format version 2: q/k/v, gate/up) is planned as the one
// tensor it is; its members are row ranges of it (`tensorParts(member)`:
// the same buffers with a `rowOffset`), so a backend can run the group as one
// matvec or each member on its own. A group split by rows is cut at member
// boundaries where it can, so gate and up split alike.
//
// `ranges[s]` lists the copies shard `s` feeds: `{srcOffset, length,
// bufferIndex, dstOffset}`. A tensor that straddles shards appears in the
// ranges of each, so it is assembled in place on the GPU and no shard needs to
// be kept after `uploadShard` returns.

import { BufferTooLargeError, ManifestError } from "../../errors.js";
import { physicalTensors } from "../../manifest.js";

/**
 * @typedef {{ name: string, offset: number, nbytes: number }} Plane
 * @typedef {{ name: string, shape: number[], dtype: string, group_size?: number, shard: number,
 *             offset: number, nbytes: number, planes?: Plane[], group?: string, group_row?: number,
 *             members?: string[] }} TensorEntry
 * @typedef {{ file: string, bytes: number, sha256: string }} ShardEntry
 * @typedef {{ shard_size: number, shards: ShardEntry[], tensors: TensorEntry[], groups?: TensorEntry[] }} WeightsManifest
 * @typedef {{ maxStorageBufferBindingSize: number, maxBufferSize: number }} UploadLimits
 * @typedef {{ size: number, label: string }} BufferSpec
 * @typedef {{ bufferIndex: number, rowStart: number, rowEnd: number, scalesOffset: number }} PartSpec
 * @typedef {{ dtype: string, shape: number[], rows: number, cols: number, groupSize: number,
 *             parts: PartSpec[] }} TensorPlan
 * @typedef {{ srcOffset: number, length: number, bufferIndex: number, dstOffset: number }} CopyRange
 * @typedef {{ group: string, rowStart: number, rows: number }} MemberPlan  rows rowStart.. of a group
 * @typedef {{ buffers: BufferSpec[], tensors: Map<string, TensorPlan>, members: Map<string, MemberPlan>,
 *             groups: Map<string, string[]>, ranges: CopyRange[][], shardBytes: number[], totalBytes: number }} UploadPlan
 */

/** Quantization group size the WebGPU kernels decode (docs/weights-format.md, storage types). */
export const KERNEL_GROUP_SIZE = 32;

/** Bytes per row of the data (or `q`) plane and of the `scales` plane, by dtype. */
const ROW_BYTES = {
  f32: (/** @type {number} */ cols) => [cols * 4, 0],
  f16: (/** @type {number} */ cols) => [cols * 2, 0],
  q8: (/** @type {number} */ cols, /** @type {number} */ g) => [cols, (cols / g) * 2],
  q4: (/** @type {number} */ cols, /** @type {number} */ g) => [cols / 2, (cols / g) * 2],
};

/** @param {number} n @param {number} a */
const alignUp = (n, a) => Math.ceil(n / a) * a;

/**
 * Compute where every tensor goes on the GPU.
 * @param {WeightsManifest} manifest
 * @param {UploadLimits} limits  `device.limits` (or the adapter's)
 * @returns {UploadPlan}
 */
export function planUpload(manifest, limits) {
  const maxSize = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const shardSize = manifest.shard_size;
  if (!Number.isInteger(shardSize) || shardSize <= 0 || shardSize % 256 !== 0) {
    throw new ManifestError(`manifest.json: shard_size ${shardSize} is not a positive multiple of 256; `
      + "reconvert the model.", { key: "shard_size" });
  }
  /** @type {BufferSpec[]} */
  const buffers = [];
  /** @type {Map<string, TensorPlan>} */
  const tensors = new Map();
  /** @type {CopyRange[][]} */
  const ranges = manifest.shards.map(() => []);
  const shardBytes = manifest.shards.map((s) => s.bytes);

  /** Cut the stream range [start, start+length) at shard boundaries. */
  const addCopy = (/** @type {number} */ start, /** @type {number} */ length,
    /** @type {number} */ bufferIndex, /** @type {number} */ dstOffset, /** @type {string} */ what) => {
    let pos = start;
    const end = start + length;
    while (pos < end) {
      const shard = Math.floor(pos / shardSize);
      if (shard >= ranges.length) {
        throw new ManifestError(`Tensor ${what} extends past the last shard (byte ${end} of the stream, `
          + `${manifest.shards.length} shards of ${shardSize} bytes): the manifest is inconsistent; reconvert the model.`,
        { tensor: what });
      }
      const srcOffset = pos - shard * shardSize;
      const n = Math.min(end - pos, shardSize - srcOffset);
      ranges[shard].push({ srcOffset, length: n, bufferIndex, dstOffset: dstOffset + (pos - start) });
      pos += n;
    }
  };

  /** @type {Map<string, MemberPlan>} */
  const members = new Map();
  /** @type {Map<string, string[]>} */
  const groups = new Map();
  const byName = new Map(manifest.tensors.map((t) => [t.name, t]));
  for (const g of manifest.groups ?? []) {
    let row = 0;
    for (const name of g.members ?? []) {
      const m = byName.get(name);
      if (!m || m.group !== g.name || m.group_row !== row) {
        throw new ManifestError(`Tensor group ${g.name} lists member ${name}, which the tensor table does not place at `
          + `row ${row} of the group: the manifest is inconsistent; reconvert the model.`, { tensor: g.name });
      }
      const rows = m.shape.length > 1 ? m.shape[0] : (m.shape[0] ?? 1);
      members.set(name, { group: g.name, rowStart: row, rows });
      row += rows;
    }
    groups.set(g.name, g.members ?? []);
  }

  for (const t of /** @type {TensorEntry[]} */ (physicalTensors(/** @type {any} */ (manifest)))) {
    const rowBytesOf = ROW_BYTES[/** @type {keyof typeof ROW_BYTES} */ (t.dtype)];
    if (!rowBytesOf) {
      throw new ManifestError(`Tensor ${t.name} has dtype '${t.dtype}', which this runtime cannot load `
        + "(expected f32, f16, q8 or q4): rebuild the site with this sitegen version.", { tensor: t.name, dtype: t.dtype });
    }
    // 1-D tensors are one row (a 1-D group, e.g. q/k/v biases, is one row per element so that its
    // members are row ranges); matrices are [rows, cols...] with everything after dim 0 flattened.
    const vectorGroup = t.members !== undefined && t.shape.length === 1;
    const rows = t.shape.length > 1 ? t.shape[0] : vectorGroup ? t.shape[0] : 1;
    const cols = t.shape.length > 1 ? t.shape.slice(1).reduce((a, b) => a * b, 1) : vectorGroup ? 1 : (t.shape[0] ?? 1);
    const groupSize = t.group_size ?? 32;
    const [qRow, sRow] = rowBytesOf(cols, groupSize);
    const quantized = sRow > 0;
    // The q4/q8 kernels read one f16 scale per 32 codes (shaders/common.wgsl); another group size
    // would be decoded wrongly, so it is refused here, before any byte is downloaded.
    if (quantized && groupSize !== KERNEL_GROUP_SIZE) {
      throw new ManifestError(`Tensor ${t.name} is quantized in groups of ${groupSize}; this runtime's kernels `
        + `read groups of ${KERNEL_GROUP_SIZE}: convert the model again with this sitegen.`,
      { tensor: t.name, group_size: groupSize });
    }
    const planeOf = (/** @type {string} */ name) => t.planes?.find((p) => p.name === name);
    const qPlane = quantized ? planeOf("q") : { name: "data", offset: 0, nbytes: t.nbytes };
    const sPlane = quantized ? planeOf("scales") : undefined;
    if (!qPlane || (quantized && !sPlane) || qPlane.nbytes !== rows * qRow
        || (sPlane && sPlane.nbytes !== rows * sRow) || !Number.isInteger(qRow) || !Number.isInteger(sRow)) {
      throw new ManifestError(`Tensor ${t.name} (${t.dtype}, shape [${t.shape}]) has planes that do not match `
        + "its shape: the manifest is inconsistent; reconvert the model.", { tensor: t.name });
    }
    const streamStart = t.shard * shardSize + t.offset;

    // A part of r rows needs align256(r*qRow) + r*sRow bytes (scales 256-aligned, as in the format).
    const partSize = (/** @type {number} */ r) => alignUp(quantized ? alignUp(r * qRow, 256) + r * sRow : r * qRow, 4);
    let rowsPerPart = rows;
    if (partSize(rows) > maxSize) {
      if (rows === 1) {
        throw new BufferTooLargeError(`Tensor ${t.name} (1-D, ${t.nbytes} bytes) is larger than this GPU's `
          + `largest storage buffer (${maxSize} bytes) and cannot be split: use a GPU with a larger `
          + "maxStorageBufferBindingSize.", { tensor: t.name, bytes: t.nbytes, limit: maxSize });
      }
      // Rows per part are a multiple of 4 so every part starts at a 4-byte-aligned byte of each plane
      // (writeBuffer needs 4-aligned offsets; a scales row can be 2 bytes). Parts are balanced.
      const maxRows = Math.floor((maxSize - 256 - 4) / (qRow + sRow) / 4) * 4;
      if (maxRows < 4) {
        throw new BufferTooLargeError(`Tensor ${t.name}: 4 rows (${partSize(4)} bytes) exceed this GPU's largest `
          + `storage buffer (${maxSize} bytes); use a GPU with a larger maxStorageBufferBindingSize.`,
        { tensor: t.name, limit: maxSize });
      }
      const nParts = Math.ceil(rows / maxRows);
      rowsPerPart = alignUp(Math.ceil(rows / nParts), 4);
    }
    // Part boundaries [r0, r1): every rowsPerPart rows; a group too large for one buffer is cut at its
    // members' boundaries first (each member then splits like a tensor of its own), so members of
    // equal shape (gate, up) are split alike and a member never straddles two buffers needlessly.
    /** @type {[number, number][]} */
    const spans = [];
    const memberSpans = rowsPerPart < rows && t.members
      ? t.members.map((n) => /** @type {MemberPlan} */ (members.get(n))).map((m) => [m.rowStart, m.rowStart + m.rows])
      : [[0, rows]];
    for (const [a, b] of memberSpans) {
      const per = b - a > rowsPerPart ? alignUp(Math.ceil((b - a) / Math.ceil((b - a) / rowsPerPart)), 4) : b - a;
      for (let r0 = a; r0 < b; r0 += per) spans.push([r0, Math.min(b, r0 + per)]);
    }

    /** @type {PartSpec[]} */
    const parts = [];
    for (const [r0, r1] of spans) {
      const n = r1 - r0;
      const bufferIndex = buffers.length;
      const scalesOffset = quantized ? alignUp(n * qRow, 256) : 0;
      const suffix = spans.length > 1 ? `[rows ${r0}:${r1}]` : "";
      buffers.push({ size: Math.max(4, partSize(n)), label: `${t.name}${suffix}` });
      parts.push({ bufferIndex, rowStart: r0, rowEnd: r1, scalesOffset });
      addCopy(streamStart + qPlane.offset + r0 * qRow, n * qRow, bufferIndex, 0, t.name);
      if (sPlane) addCopy(streamStart + sPlane.offset + r0 * sRow, n * sRow, bufferIndex, scalesOffset, t.name);
    }
    tensors.set(t.name, { dtype: t.dtype, shape: t.shape, rows, cols, groupSize, parts });
  }
  const totalBytes = buffers.reduce((a, b) => a + b.size, 0);
  return { buffers, tensors, members, groups, ranges, shardBytes, totalBytes };
}

/**
 * Create the (empty) GPU buffers of a plan. The caller owns them (`destroy()` on unload).
 * @param {GPUDevice} device
 * @param {UploadPlan} plan
 * @returns {GPUBuffer[]}
 */
export function createBuffers(device, plan) {
  // GPUBufferUsage may be absent as a global under Node's Dawn; the flag values are fixed by the spec.
  const usage = 0x0080 /* STORAGE */ | 0x0008 /* COPY_DST */ | 0x0004 /* COPY_SRC, for tests reading back */;
  return plan.buffers.map((b) => device.createBuffer({ size: b.size, usage, label: b.label }));
}

/**
 * Write one verified shard into its GPU buffers. The shard can be dropped as
 * soon as this returns: `queue.writeBuffer` copies the bytes.
 * @param {GPUDevice} device
 * @param {UploadPlan} plan
 * @param {GPUBuffer[]} buffers
 * @param {number} shardIndex
 * @param {Uint8Array} bytes  the whole shard
 */
export function uploadShard(device, plan, buffers, shardIndex, bytes) {
  for (const r of plan.ranges[shardIndex]) {
    // writeBuffer needs a size that is a multiple of 4. Offsets are 4-aligned by construction (tensors and
    // planes are 256-aligned in the stream, parts start at a multiple of 4 rows, shards are 4-aligned), so
    // only a range's tail can be ragged: round it up; the extra bytes land in the part's padding.
    const length = alignUp(r.length, 4);
    if (r.srcOffset + length <= bytes.byteLength) {
      device.queue.writeBuffer(buffers[r.bufferIndex], r.dstOffset, /** @type {Uint8Array<ArrayBuffer>} */ (bytes), r.srcOffset, length);
    } else {
      // The ragged tail is the end of the shard (the stream's last tensor): copy into a zero-padded scrap.
      const tail = new Uint8Array(length);
      tail.set(bytes.subarray(r.srcOffset, r.srcOffset + r.length));
      device.queue.writeBuffer(buffers[r.bufferIndex], r.dstOffset, tail, 0, length);
    }
  }
}

/**
 * The kernels' view of a planned tensor, group or group member: one
 * `{buffer, dtype, rows, cols, scalesOffset, rowOffset, rowStart}` per part,
 * where `rowStart` is the part's first row in the tensor asked for and
 * `rowOffset` the row of the part's buffer where it begins (non-zero for a
 * member of a group, which shares its group's buffers).
 * @param {UploadPlan} plan
 * @param {GPUBuffer[]} buffers
 * @param {string} name
 */
export function tensorParts(plan, buffers, name) {
  const member = plan.members.get(name);
  const t = plan.tensors.get(member ? member.group : name);
  if (!t) throw new ManifestError(`The model has no tensor '${name}'.`, { tensor: name });
  const [lo, hi] = member ? [member.rowStart, member.rowStart + member.rows] : [0, t.rows];
  return t.parts.filter((p) => p.rowEnd > lo && p.rowStart < hi).map((p) => {
    const r0 = Math.max(lo, p.rowStart), r1 = Math.min(hi, p.rowEnd);
    return {
      buffer: buffers[p.bufferIndex], dtype: /** @type {"f32" | "f16" | "q8" | "q4"} */ (t.dtype), rows: r1 - r0, cols: t.cols,
      rowStart: r0 - lo, rowOffset: r0 - p.rowStart, scalesOffset: p.scalesOffset, groupSize: t.groupSize,
    };
  });
}

/**
 * Whether the plan has `name` (a tensor, a group or a group member).
 * @param {UploadPlan} plan @param {string} name
 */
export function hasTensor(plan, name) {
  return plan.tensors.has(name) || plan.members.has(name);
}
