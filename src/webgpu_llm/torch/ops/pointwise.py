"""Pointwise ATen ops (arithmetic, comparisons, activations, where, masked_fill, ...).

Each op is a WGSL expression template over its operands `{0}`, `{1}`, ... (tensors or
scalars, in schema order) and `{Z}` (zero of the compute type); one float and one integer
variant. Functional, in-place and `out=` overloads share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...kernels.pointwise import Pointwise
from ..launch import elementwise as ew
from ..tensors import block, empty
from .registry import is_device, register
from .schema import bind, result_dtype

aten = torch.ops.aten


@dataclass(frozen=True)
class Expr:
    f: str | None  # float template (None: integer-only op)
    i: str | None = None  # integer template (None: computed in f32)
    compare: bool = False  # result is bool, computed in the inputs' common type


def _broadcast(shapes: Sequence[Sequence[int]]) -> list[int]:
    r = max((len(s) for s in shapes), default=0)
    out = [1] * r
    for s in shapes:
        off = r - len(s)
        for d, n in enumerate(s):
            if n != 1:
                if out[off + d] not in (1, n):
                    raise RuntimeError(f"shapes {[list(x) for x in shapes]} cannot be broadcast together")
                out[off + d] = n
    return out


def _scalar(x: Any) -> Any:
    """CPU zero-dim tensors act as scalars of their value."""
    if isinstance(x, torch.Tensor) and not is_device(x):
        if x.dim() != 0:
            raise RuntimeError("webgpu: expected a webgpu tensor, got a CPU tensor with dimensions")
        return x.item()
    return x


def compute(expr: Expr, operands: list[Any], out: torch.Tensor, name: str = "pw") -> torch.Tensor:
    """out = expr(operands); `name` labels the kernel (profiles)."""
    common = None
    if expr.compare:  # computed in the type the two inputs promote to
        common = torch.result_type(*operands[:2]) if len(operands) > 1 else operands[0].dtype
        floating = common.is_floating_point
    else:
        floating = out.dtype.is_floating_point
    if floating and expr.f is None:
        raise RuntimeError("webgpu: this op is only defined for integer types")
    kind = "f32" if floating or expr.i is None else "i32"
    template = expr.f if kind == "f32" else expr.i
    assert template is not None
    tensors: list[torch.Tensor] = []
    scalars: list[float] = []
    names: list[str] = []
    for x in operands:
        x = _scalar(x)
        if isinstance(x, torch.Tensor):
            names.append(f"a{len(tensors)}")
            tensors.append(x)
        else:
            names.append(f"s{len(scalars)}")
            if kind == "f32" and common in (torch.float16, torch.bfloat16):
                x = torch.tensor(float(x), dtype=common).item()  # torch compares in the common type
            scalars.append(float(x) if kind == "f32" else int(x))
    code = template.format(*names, Z="0.0" if kind == "f32" else "0i")
    ew.run(Pointwise(name, code, kind, "i32" if expr.compare else kind), out, tensors, scalars)
    return out


def _shape_of(operands: list[Any]) -> list[int]:
    return _broadcast([x.shape for x in operands if is_device(x)])


def _out_overload(name: str, ov: str) -> Any:
    """The out= overload that goes with functional overload `ov` (None if there is none)."""
    packet = getattr(aten, name)
    names = {"default": ["out"], "Tensor": ["Tensor_out", "out"], "Tensor_mode": ["out_mode"]}.get(ov, [ov + "_out"])
    for n in names:
        if n in packet.overloads():
            return getattr(packet, n)
    return None


Pick = Callable[[list[Any]], tuple[Expr, list[Any]]]
_NAMES = {torch.float32: "Float", torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float64: "Double",
          torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
          torch.bool: "Bool"}


def _check_cast(result: torch.dtype, out: torch.dtype) -> None:
    """As torch: an in-place result its tensor's dtype cannot hold (int_tensor.add_(2.5)) is an error."""
    if not torch.can_cast(result, out):
        raise RuntimeError(f"result type {_NAMES.get(result, result)} can't be cast to the desired "
                           f"output type {_NAMES.get(out, out)}")


def define(name: str, expr: Expr, overloads: Sequence[str], pick: Pick | None = None) -> None:
    """Register `name.<overload>`, `name_.<overload>` and the out= overloads of one expression.

    `pick(args)` may choose another expression and the operands from the bound arguments
    (default: every argument, in schema order).
    """

    def operands_of(args: list[Any]) -> tuple[Expr, list[Any]]:
        return pick(args) if pick is not None else (expr, args)

    def qualified(base: str, ov: str) -> str:
        return base if ov == "default" else f"{base}.{ov}"

    for ov in overloads:
        functional = getattr(getattr(aten, name), ov)

        def fn(*args: Any, _op: Any = functional, **kwargs: Any) -> torch.Tensor:
            vals = bind(_op, args, kwargs)
            e, ops = operands_of(vals)
            return compute(e, ops, empty(_shape_of(ops), result_dtype(_op, vals)), name)

        register(qualified(name, ov), fn)

        inplace = getattr(aten, name + "_", None)
        if inplace is not None and ov in inplace.overloads():
            inplace_op = getattr(inplace, ov)

            def fn_(*args: Any, _op: Any = inplace_op, _f: Any = functional, **kwargs: Any) -> torch.Tensor:
                vals = bind(_op, args, kwargs)
                _check_cast(result_dtype(_f, vals), vals[0].dtype)
                e, ops = operands_of(vals)
                return compute(e, ops, vals[0], name)

            register(qualified(name + "_", ov), fn_)

        out_op = _out_overload(name, ov)
        if out_op is not None:

            def fn_out(*args: Any, _op: Any = out_op, **kwargs: Any) -> torch.Tensor:
                vals = bind(_op, args, kwargs)
                out = vals[-1]
                e, ops = operands_of(vals[:-1])
                shape = _shape_of(ops)
                if list(out.shape) != shape:
                    out.resize_(shape)
                return compute(e, ops, out, name)

            register(f"{name}.{out_op._overloadname}", fn_out)


# -- arithmetic ------------------------------------------------------------------------------
def _alpha(e1: Expr, e_alpha: Expr) -> Callable[[list[Any]], tuple[Expr, list[Any]]]:
    def pick(a: list[Any]) -> tuple[Expr, list[Any]]:
        return (e1, a[:2]) if a[2] == 1 else (e_alpha, a[:3])

    return pick


define("add", Expr("{0} + {1}", "{0} + {1}"), ["Tensor", "Scalar"],
       _alpha(Expr("{0} + {1}", "{0} + {1}"), Expr("{0} + {2} * {1}", "{0} + {2} * {1}")))
define("sub", Expr("{0} - {1}", "{0} - {1}"), ["Tensor", "Scalar"],
       _alpha(Expr("{0} - {1}", "{0} - {1}"), Expr("{0} - {2} * {1}", "{0} - {2} * {1}")))
define("rsub", Expr("{1} - {0}", "{1} - {0}"), ["Tensor", "Scalar"],
       _alpha(Expr("{1} - {0}", "{1} - {0}"), Expr("{1} - {2} * {0}", "{1} - {2} * {0}")))
define("mul", Expr("{0} * {1}", "{0} * {1}"), ["Tensor", "Scalar"])

_DIV = {None: Expr("{0} / {1}"), "trunc": Expr("trunc({0} / {1})", "{0} / {1}"),
        "floor": Expr("floor({0} / {1})", "m_idiv({0}, {1})")}
define("div", _DIV[None], ["Tensor", "Scalar"])
define("div", _DIV[None], ["Tensor_mode", "Scalar_mode"], lambda a: (_DIV[a[2]], a[:2]))
define("floor_divide", _DIV["floor"], ["default", "Scalar"])
define("remainder", Expr("{0} - floor({0} / {1}) * {1}", "m_imod({0}, {1})"), ["Tensor", "Scalar"])
define("fmod", Expr("{0} - trunc({0} / {1}) * {1}", "{0} % {1}"), ["Tensor", "Scalar"])
define("pow", Expr("m_pow({0}, {1})", "m_ipow({0}, {1})"), ["Tensor_Tensor", "Tensor_Scalar", "Scalar"])
define("maximum", Expr("max({0}, {1})", "max({0}, {1})"), ["default"])
define("minimum", Expr("min({0}, {1})", "min({0}, {1})"), ["default"])
define("clamp_min", Expr("max({0}, {1})", "max({0}, {1})"), ["default", "Tensor"])
define("clamp_max", Expr("min({0}, {1})", "min({0}, {1})"), ["default", "Tensor"])


def _clamp(a: list[Any]) -> tuple[Expr, list[Any]]:
    lo, hi = a[1], a[2]
    if lo is not None and hi is not None:
        return Expr("min(max({0}, {1}), {2})", "min(max({0}, {1}), {2})"), a[:3]
    if lo is not None:
        return Expr("max({0}, {1})", "max({0}, {1})"), a[:2]
    return Expr("min({0}, {1})", "min({0}, {1})"), [a[0], hi]


define("clamp", Expr(None), ["default", "Tensor"], _clamp)

# -- comparisons and logic -------------------------------------------------------------------
for _name, _sym in [("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")]:
    _e = f"select(0i, 1i, {{0}} {_sym} {{1}})"
    define(_name, Expr(_e, _e, compare=True), ["Tensor", "Scalar"])
for _name, _sym in [("logical_and", "&&"), ("logical_or", "||"), ("logical_xor", "!=")]:
    _e = f"select(0i, 1i, ({{0}} != {{Z}}) {_sym} ({{1}} != {{Z}}))"
    define(_name, Expr(_e, _e, compare=True), ["default"])
define("logical_not", Expr("select(0i, 1i, {0} == {Z})", "select(0i, 1i, {0} == {Z})", compare=True), ["default"])
for _name, _sym in [("bitwise_and", "&"), ("bitwise_or", "|"), ("bitwise_xor", "^")]:
    define(_name, Expr(None, f"{{0}} {_sym} {{1}}"), ["Tensor", "Scalar"])


def _bitwise_not(a: list[Any]) -> tuple[Expr, list[Any]]:
    if a[0].dtype == torch.bool:
        return Expr(None, "1i - {0}"), a[:1]
    return Expr(None, "~{0}"), a[:1]


define("bitwise_not", Expr(None), ["default"], _bitwise_not)
define("where", Expr("select({2}, {1}, {0} != {Z})", "select({2}, {1}, {0} != {Z})"), ["self", "ScalarSelf", "ScalarOther", "Scalar"])
define("masked_fill", Expr("select({0}, {2}, {1} != {Z})", "select({0}, {2}, {1} != {Z})"), ["Scalar", "Tensor"])
define("isnan", Expr("select(0i, 1i, {0} != {0})", "0i", compare=True), ["default"])
define("isneginf", Expr("select(0i, 1i, {0} == -inf())", "0i", compare=True), ["default"])
define("isposinf", Expr("select(0i, 1i, {0} == inf())", "0i", compare=True), ["default"])
define("isinf", Expr("select(0i, 1i, abs({0}) == inf())", "0i", compare=True), ["default"])

# -- unary math ------------------------------------------------------------------------------
_UNARY_F = {
    "exp": "exp({0})", "exp2": "exp2({0})", "log": "log({0})", "log2": "log2({0})",
    "log1p": "log(1.0 + {0})", "expm1": "exp({0}) - 1.0", "sqrt": "sqrt({0})", "rsqrt": "inverseSqrt({0})",
    "reciprocal": "1.0 / {0}", "sin": "m_sincos({0}).x", "cos": "m_sincos({0}).y",
    "tan": "m_sincos({0}).x / m_sincos({0}).y", "tanh": "m_tanh({0})", "sigmoid": "1.0 / (1.0 + exp(-{0}))",
    "erf": "m_erf({0})", "silu": "{0} / (1.0 + exp(-{0}))", "floor": "floor({0})", "ceil": "ceil({0})",
    "round": "round({0})", "trunc": "trunc({0})", "atan": "atan({0})",
}
for _name, _e in _UNARY_F.items():
    _int = "{0}" if _name in ("floor", "ceil", "round", "trunc") else None
    define(_name, Expr(_e, _int), ["default"])
define("neg", Expr("-{0}", "-{0}"), ["default"])
define("abs", Expr("abs({0})", "abs({0})"), ["default"])
define("sign", Expr("sign({0})", "sign({0})"), ["default"])
define("relu", Expr("max({0}, 0.0)", "max({0}, 0i)"), ["default"])

_GELU = {"none": Expr("0.5 * {0} * (1.0 + m_erf({0} * 0.7071067811865476))"),
         "tanh": Expr("0.5 * {0} * (1.0 + m_tanh(0.7978845608028654 * ({0} + 0.044715 * {0} * {0} * {0})))")}
define("gelu", _GELU["none"], ["default"], lambda a: (_GELU[a[1]], a[:1]))


# -- foreach -----------------------------------------------------------------------------------
def _foreach_add_scalar_(tensors: list[torch.Tensor], scalar: Any) -> None:
    """torch._foreach_add_(tensors, scalar): one launch for the tensors that allow it (contiguous,
    32/64-bit, each in its own buffer; one dtype per launch), a plain add_ for the rest."""
    for t in tensors:  # as torch: check every cast before changing anything
        _check_cast(torch.result_type(t, scalar), t.dtype)
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    seen: set[Any] = set()
    for t in tensors:
        if not is_device(t):
            raise RuntimeError("webgpu: _foreach_add_ expects webgpu tensors")
        b = block(t) if t.numel() else None
        if b is None or b in seen or not t.is_contiguous() or t.element_size() < 4 or isinstance(scalar, bool):
            t.add_(scalar)
            continue
        seen.add(b)
        groups.setdefault(t.dtype, []).append(t)
    for group in groups.values():
        ew.add_many_(group, scalar)


register("_foreach_add_.Scalar", _foreach_add_scalar_, plan=False)
