// Embedding lookup: one workgroup per token copies (dequantizes) one row of
// the table, for ids in this part's rows [row_start, row_start + rows).
// Grid: tokens (split over x/y).

fn table_at(r: u32, c: u32) -> f32 {
  let K = P.table_k;
#if TABLE_Q4
  let q = table[r * (K / 8u) + c / 8u];
  let si = 2u * P.table_so + r * (K / 32u) + c / 32u;  // index of the f16 scale
  return q4_code(q, c % 8u) * half_of(table[si / 2u], si);
#elif TABLE_Q8
  let q = table[r * (K / 4u) + c / 4u];
  let si = 2u * P.table_so + r * (K / 32u) + c / 32u;
  return q8_code(q, c % 4u) * half_of(table[si / 2u], si);
#elif TABLE_F16
  let e = r * K + c;
  return half_of(table[e / 2u], e);
#else
  return bitcast<f32>(table[r * K + c]);
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = wg_index(wid, nwg);
  if (t >= S.tokens) { return; }
  var id: u32;
  if (POSITIONS) { id = S.pos0 + t; } else { id = ids[P.ids_offset + t]; }
  if (id < P.row_start || id - P.row_start >= P.rows) { return; }
  let r = id - P.row_start + P.table_r0;
  for (var c = lid; c < P.hidden; c += WG) {
    var v = table_at(r, c) * P.scale;
    let o = t * P.hidden + c;
    if (ACCUM) { v += out[o]; }
    out[o] = v;
  }
}
