"""Per-token negative log-likelihood of the next token, for perplexity, computed on the GPU
so that only one float per token comes back instead of a row of logits."""

from __future__ import annotations

from ..runtime.program import Kernel
from .common import Signature, wgsl_reduce


def nll_kernel(vocab: int, t0: int) -> Kernel:
    """nll[t0 + t] = logsumexp(logits[t]) - logits[t, tokens[pos + t0 + t + 1]] for the logit
    rows of batch tokens t0, t0+1, ... whose next token is known (position + 1 < st.limit);
    grid = (rows in the logits buffer,)."""
    sig = Signature().state()
    sig.storage("logits", "array<f32>")
    sig.storage("tokens", "array<u32>")
    sig.storage("nll", "array<f32>", write=True)
    body = wgsl_reduce("red_max", "max", 256) + wgsl_reduce("red_sum", "sum", 256) + f"""
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let t = wid.x;
  if ({t0}u + t >= st.n || st.pos + {t0}u + t + 1u >= st.limit) {{ return; }}
  let base = t * {vocab}u;
  var mx = -3.4e38;
  for (var i = lid; i < {vocab}u; i += 256u) {{ mx = max(mx, logits[base + i]); }}
  mx = red_max(mx, lid, 1u);
  var s = 0.0;
  for (var i = lid; i < {vocab}u; i += 256u) {{ s += exp(logits[base + i] - mx); }}
  s = red_sum(s, lid, 1u);
  if (lid == 0u) {{
    let tgt = min(tokens[st.pos + {t0}u + t + 1u], {vocab - 1}u);
    nll[{t0}u + t] = mx + log(s) - logits[base + tgt];
  }}
}}
"""
    return sig.kernel("nll", body)
