"""`torch.compile(model, backend="webgpu")`: ATen graphs, fused, recorded and replayed.

Dynamo hands the graph to AOTAutograd, which functionalizes it into ATen ops (keeping input
mutations such as KV-cache updates as in-graph copies); the fusion passes then rewrite
known patterns into fused device ops, and the graph runs through a GraphRunner.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.backends.registry import register_backend

from .passes import fuse
from .replay import GraphRunner

_count = 0
RUNNERS: weakref.WeakSet[GraphRunner] = weakref.WeakSet()  # every live compiled graph (for reports)


def mutated_inputs(gm: torch.fx.GraphModule) -> frozenset[int]:
    """Indices of the placeholders that some op of the graph writes into."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    index = {n: i for i, n in enumerate(placeholders)}
    out = set()
    for n in gm.graph.nodes:
        if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload):
            continue
        for a, arg in zip(n.target._schema.arguments, n.args):
            if a.alias_info is not None and a.alias_info.is_write:
                for x in (arg if isinstance(arg, (list, tuple)) else [arg]):  # Tensor(a!)[] too
                    if isinstance(x, torch.fx.Node) and x in index:
                        out.add(index[x])
    return frozenset(out)


def compile_graph(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> GraphRunner:
    global _count
    _count += 1
    fired = fuse(gm)
    runner = GraphRunner(gm, f"graph{_count}", mutated_inputs(gm))
    runner.fusions = fired
    RUNNERS.add(runner)
    return runner


def graph_report() -> list[dict[str, Any]]:
    """Per compiled graph: fusions applied, replays so far, and launches of each recording."""
    out = []
    for r in sorted(RUNNERS, key=lambda r: r.name):
        out.append({"graph": r.name, "fusions": dict(r.fusions), "replays": r.replays,
                    "recorded_launches": [len(rec.program.dispatches) for rec in r.recorded.values()],
                    "eager_shapes": len(r.seen) - len(r.recorded)})
    return out


_aot = aot_autograd(fw_compiler=compile_graph, bw_compiler=compile_graph, keep_inference_input_mutations=True)


@register_backend(name="webgpu")
def webgpu_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    return _aot(gm, example_inputs)
