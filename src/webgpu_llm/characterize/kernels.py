"""The two WGSL kernels the micro-benchmarks dispatch.

`trivial`: one invocation adds 1 to a counter — as little GPU work as a dispatch can carry,
so its time is all overhead. Two copies (A and B) exist so the benchmarks alternate pipelines
like a real decode step does; the counters let us check that every dispatch really ran.

`reduce`: sums a vec4<f32> array (its length is the bound size) into one partial per
workgroup — a streaming read whose size sweeps from trivial to bandwidth-bound.
"""

from __future__ import annotations

from ..runtime.program import Kernel

TRIVIAL_WG_NOTE = "1 workgroup of 1 invocation, one u32 read-modify-write"


def trivial(variant: str) -> Kernel:
    # `variant` only changes the source text: two distinct pipelines with identical work.
    wgsl = f"""// trivial kernel, variant {variant}
@group(0) @binding(0) var<storage, read_write> counter: array<u32>;

@compute @workgroup_size(1)
fn main() {{
    counter[0] = counter[0] + 1u;
}}
"""
    return Kernel(f"trivial_{variant}", wgsl, ("counter",))


REDUCE_WG = 256
REDUCE_MAX_WORKGROUPS = 4096  # enough to fill an H200 (132 SMs) with loads in flight

REDUCE = Kernel(
    "reduce",
    f"""// streaming read: partial sums of a vec4<f32> array, one per workgroup
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

var<workgroup> part: array<f32, {REDUCE_WG}>;

@compute @workgroup_size({REDUCE_WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {{
    let n = arrayLength(&src);
    let stride = nwg.x * {REDUCE_WG}u;
    var i = wid.x * {REDUCE_WG}u + lid.x;
    // Four independent loads per iteration keep enough memory requests in flight.
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    while (i + 3u * stride < n) {{
        a0 += src[i];
        a1 += src[i + stride];
        a2 += src[i + 2u * stride];
        a3 += src[i + 3u * stride];
        i += 4u * stride;
    }}
    while (i < n) {{
        a0 += src[i];
        i += stride;
    }}
    let a = (a0 + a1) + (a2 + a3);
    part[lid.x] = (a.x + a.y) + (a.z + a.w);
    workgroupBarrier();
    for (var s = {REDUCE_WG // 2}u; s > 0u; s >>= 1u) {{
        if (lid.x < s) {{
            part[lid.x] += part[lid.x + s];
        }}
        workgroupBarrier();
    }}
    if (lid.x == 0u) {{
        dst[wid.x] = part[0];
    }}
}}
""",
    ("src", "dst"),
)


def reduce_workgroups(nbytes: int) -> int:
    """Workgroups for a reduction over `nbytes`: one vec4 per thread per pass, capped."""
    vec4s = max(1, nbytes // 16)
    return max(1, min(REDUCE_MAX_WORKGROUPS, -(-vec4s // (4 * REDUCE_WG))))
