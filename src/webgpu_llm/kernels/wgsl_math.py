"""WGSL functions that pointwise expressions may call, included only where used.

WGSL's own sin/cos are only required to be accurate to 2^-11 on [-pi, pi] and erf does not
exist, so RoPE tables and GELU get their own versions (Cephes-style reduction and
polynomials, about 1 ulp).
"""

from __future__ import annotations

_FUNCS = {
    "m_sincos": """
// sin and cos of x: reduce to [-pi/4, pi/4] with a three-part pi/2, then minimax polynomials.
fn m_sincos(x: f32) -> vec2<f32> {
  let q = round(x * 0.63661977236758134);
  var r = x - q * 1.5703125;
  r = r - q * 4.837512969970703125e-4;
  r = r - q * 7.549789948768648e-8;
  let z = r * r;
  let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
  let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
  let k = i32(q) & 3;
  if (k == 0) { return vec2<f32>(s, c); }
  if (k == 1) { return vec2<f32>(c, -s); }
  if (k == 2) { return vec2<f32>(-s, -c); }
  return vec2<f32>(-c, s);
}
""",
    "m_erf": """
// erf with absolute error below 1.2e-7 (Numerical Recipes' erfc Chebyshev fit).
fn m_erf(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
          + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  let r = 1.0 - t * exp(p);
  return select(-r, r, x >= 0.0);
}
""",
    "m_pow": """
// torch.pow for floats: negative bases with integral exponents keep their sign rules.
fn m_pow(a: f32, e: f32) -> f32 {
  if (e == 0.0) { return 1.0; }
  if (e == 1.0) { return a; }
  if (e == 2.0) { return a * a; }
  let r = pow(abs(a), e);
  if (a >= 0.0) { return r; }
  if (e != floor(e)) { return nan(); }
  return select(r, -r, (i32(e) & 1) == 1);
}
""",
    "m_ipow": """
fn m_ipow(a: i32, e: i32) -> i32 {
  var r = 1i;
  var b = a;
  var k = e;
  loop {
    if (k <= 0) { break; }
    if ((k & 1) == 1) { r = r * b; }
    b = b * b;
    k = k >> 1u;
  }
  return r;
}
""",
    "m_tanh": """
// tanh without the overflow of (e^2x - 1) / (e^2x + 1) for large |x|.
fn m_tanh(x: f32) -> f32 {
  let e = exp(-2.0 * abs(x));
  let r = (1.0 - e) / (1.0 + e);
  return select(-r, r, x >= 0.0);
}
""",
    "m_idiv": """
// integer division rounding toward minus infinity (torch's floor_divide)
fn m_idiv(a: i32, b: i32) -> i32 {
  let q = a / b;
  return select(q, q - 1, (a % b != 0) && ((a < 0) != (b < 0)));
}
""",
    "m_imod": """
// integer remainder with the divisor's sign (torch.remainder)
fn m_imod(a: i32, b: i32) -> i32 {
  let r = a % b;
  return select(r, r + b, (r != 0) && ((r < 0) != (b < 0)));
}
""",
}


def helpers_for(code: str) -> str:
    """The helper functions that `code` calls."""
    return "".join(src for name, src in _FUNCS.items() if name + "(" in code)
