// Element-wise ops over [tokens, n]. Grid: ceil(tokens * n / WG) (split over x/y).

#if IS_ACT
// out = act(gate) * up (GATED) or act(up)
@compute @workgroup_size(WG)
fn act_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = wg_index(wid, nwg) * WG + lid;
  if (i >= S.tokens * P.n) { return; }
  if (GATED) { out[i] = activate(gate[i]) * up[i]; } else { out[i] = activate(up[i]); }
}

#endif

#if IS_ADD
// Residual add: out += x * scale
@compute @workgroup_size(WG)
fn add_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = wg_index(wid, nwg) * WG + lid;
  if (i >= S.tokens * P.n) { return; }
  out[i] += x[i] * P.scale;
}
#endif
