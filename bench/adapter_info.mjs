// Prints what the WebGPU adapter offers: description, features, the limits the runtime asks for,
// and (Dawn with `allow_unsafe_apis`) the subgroup-matrix shapes and types, which decide whether a
// prefill matmul on them is possible without `shader-f16` (its f16 configurations need that feature).
//
//   SITEGEN_DAWN_FLAGS=enable-dawn-features=allow_unsafe_apis node bench/adapter_info.mjs
import { getNodeGPU } from "../runtime/backends/webgpu/dawn.js";
import { probeSubgroupMatrix, SUBGROUP_MATRIX } from "../runtime/backends/webgpu/kernels.js";

const gpu = await getNodeGPU();
/** @type {any} */ (globalThis).__gpu = gpu;  // dawn.node crashes once its GPU object is collected
const adapter = /** @type {any} */ (await gpu.requestAdapter({ powerPreference: "high-performance" }));
if (!adapter) throw new Error("no WebGPU adapter");
const info = {};
for (const k in adapter.info) info[k] = adapter.info[k];
// (the configurations' fields are getters, which JSON.stringify does not see)
info.subgroupMatrixConfigs = [...(adapter.info.subgroupMatrixConfigs ?? [])].map((c) => (
  { componentType: c.componentType, resultComponentType: c.resultComponentType, M: c.M, N: c.N, K: c.K }));
const L = adapter.limits;
console.log(JSON.stringify({
  info, features: [...adapter.features].sort(),
  limits: Object.fromEntries(["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupsPerDimension", "maxStorageBuffersPerShaderStage"].map((k) => [k, L[k]])),
}, null, 1));
// The prefill's integer product: which spelling of the i8 subgroup-matrix builtins this Dawn takes
// (kernels.js probeSubgroupMatrix), and why each other candidate failed.
if (adapter.features.has(SUBGROUP_MATRIX)) {
  const device = await adapter.requestDevice({ requiredFeatures: [SUBGROUP_MATRIX, "subgroups"] });
  const got = await probeSubgroupMatrix(device, (line) => console.log(`subgroup matrices: ${line}`));
  console.log(`subgroup matrices: ${got ? `taken: ${JSON.stringify(got)}` : "none usable"}`);
}
process.exit(0);
