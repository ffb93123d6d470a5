"""Small helpers for matching and rewriting ATen FX graphs."""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Node

aten = torch.ops.aten
END = 2**63 - 1  # a slice's "to the end"


def is_op(n: Any, *targets: Any) -> bool:
    return isinstance(n, Node) and n.op == "call_function" and n.target in targets


def val(n: Any) -> Any:
    """The example value (a FakeTensor) that tracing attached to a node."""
    return n.meta.get("val") if isinstance(n, Node) else None


def strip_cast(n: Any) -> Any:
    """The input of a dtype-only `_to_copy` (or `n` itself)."""
    if is_op(n, aten._to_copy.default) and set(n.kwargs) <= {"dtype"}:
        return n.args[0]
    return n


def other(n: Node, x: Any) -> Any:
    """The operand of a binary node that is not `x` (None if x is not an operand)."""
    a, b = n.args[0], n.args[1]
    return b if a is x else a if b is x else None


def single_use(n: Any) -> bool:
    return isinstance(n, Node) and len(n.users) == 1


def replace(graph: torch.fx.Graph, old: Node, target: Any, args: tuple[Any, ...]) -> Node:
    with graph.inserting_before(old):
        new = graph.call_function(target, args)
    new.meta.update(old.meta)
    old.replace_all_uses_with(new)
    return new
