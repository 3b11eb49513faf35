"""The graph the passes work on: dynamo's (or vLLM's) torch-level FX graph retraced to ATen, not functionalised.

Why ATen: one model line has many torch-level spellings (`x.float()`, `x.to(torch.float32)`, `x.pow(2)`,
`x ** 2`, `torch.mul`, `operator.mul`, `chunk` vs slicing) and each would need its own pattern; retraced with
`make_fx`, they become the same canonical ATen ops (`_to_copy`, `pow.Tensor_Scalar`, `mul.Tensor`, `split.Tensor`),
so one pattern per form of the maths is enough. Casts that do nothing (`.float()` on a float32 tensor) vanish.
Why not functionalised: in-place writes (the KV-cache `index_put_`, vLLM's out-variant matmuls) stay in place,
as they would run eagerly; functionalisation would turn a write into a copy of the whole cache.

The retrace runs on dynamo's own fake inputs (placeholder `example_value` / `val` metadata, or fake example
inputs as vLLM passes them), so symbolic sizes stay dynamo's symbols and the ATen graph serves every size the
original served. Its calling convention is the original's: the same flat inputs, the same output structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.fx
from torch._dispatch.python import enable_python_dispatcher
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.experimental.proxy_tensor import make_fx

from ascend_graph import kernels  # noqa: F401  (the ops replacements call must exist before tracing)


def _is_fake(value: Any) -> bool:
    return isinstance(value, FakeTensor | torch.SymInt | torch.SymFloat | torch.SymBool)


def fake_inputs(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> list[Any]:
    """One fake (or plain Python) value per placeholder, sharing the symbols of the graph's tracer."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise ValueError(
            f"ascend_graph passes: the graph has {len(placeholders)} inputs but {len(example_inputs)} example "
            "inputs were given"
        )
    metas = [node.meta.get("example_value", node.meta.get("val")) for node in placeholders]
    # The mode of the graph's own fake values: inside a backend call the tracing context may hold another one.
    fake_mode = next((value.fake_mode for value in [*metas, *example_inputs] if isinstance(value, FakeTensor)), None)
    fake_mode = fake_mode or detect_fake_mode(example_inputs)
    values = []
    for node, example in zip(placeholders, example_inputs, strict=True):
        meta = node.meta.get("example_value", node.meta.get("val"))
        if _is_fake(example) or not isinstance(example, torch.Tensor):
            values.append(example if _is_fake(example) or meta is None else meta)
        elif isinstance(meta, FakeTensor):
            values.append(meta)
        elif fake_mode is not None:
            values.append(fake_mode.from_tensor(example))
        else:
            raise ValueError(
                f"ascend_graph passes: input {node.name!r} is a real tensor without fake metadata; passes need "
                "the graph as dynamo or vLLM hands it over"
            )
    return values


def to_aten(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> torch.fx.GraphModule:
    """`gm` retraced to ATen ops (no decomposition, no functionalisation) on its fake inputs."""
    inputs = fake_inputs(gm, example_inputs)
    fake_mode = next((value.fake_mode for value in inputs if isinstance(value, FakeTensor)), None)
    with fake_mode or nullcontext(), enable_python_dispatcher():
        aten = make_fx(gm, tracing_mode="real")(*inputs)
    _bake_lifted_scalars(aten, example_inputs)
    _merge_duplicate_casts(aten)
    aten.graph.eliminate_dead_code()
    aten.recompile()
    return aten


def _bake_lifted_scalars(aten: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Dynamo lifts Python floats read from the model (eps) into 0-dim CPU tensor inputs read with
    `_local_scalar_dense`; patterns match eps as a constant, so its value is put back as one. The backend already
    treats such inputs as host values that must keep their captured value (`InputKind.HOST_VALUE`)."""
    placeholders = [node for node in aten.graph.nodes if node.op == "placeholder"]
    for node in list(aten.graph.nodes):
        if node.target is not torch.ops.aten._local_scalar_dense.default or node.args[0] not in placeholders:
            continue
        example = example_inputs[placeholders.index(node.args[0])]
        if isinstance(example, torch.Tensor) and not _is_fake(example) and example.device.type == "cpu":
            node.replace_all_uses_with(example.item())
            aten.graph.erase_node(node)


def _merge_duplicate_casts(aten: torch.fx.GraphModule) -> None:
    """`x.float().pow(2)` and `x.float() * rsqrt(...)` cast x twice; one cast, as `x = x.float()` writes it, gives
    one canonical form to match. Only casts nothing writes in place are merged."""
    seen: dict[tuple[Any, ...], torch.fx.Node] = {}
    for node in list(aten.graph.nodes):
        if node.target is not torch.ops.aten._to_copy.default or _mutated(node) or _mutated(node.args[0]):
            continue
        key = (node.args, tuple(sorted(node.kwargs.items(), key=lambda item: item[0])))
        if key in seen:
            node.replace_all_uses_with(seen[key])
            aten.graph.erase_node(node)
        else:
            seen[key] = node


def _mutated(node: Any) -> bool:
    return isinstance(node, torch.fx.Node) and any(
        isinstance(user.target, torch._ops.OpOverload) and user.target._schema.is_mutable for user in node.users
    )


def count_ops(gm: torch.fx.GraphModule) -> int:
    """Compute nodes (call_function / call_method / call_module), the unit of the passes' before/after counts."""
    return sum(node.op in ("call_function", "call_method", "call_module") for node in gm.graph.nodes)


def op_histogram(gm: torch.fx.GraphModule) -> dict[str, int]:
    """How many nodes call each target, e.g. {"aten.mul.Tensor": 12, "ascend_graph.rms_norm.default": 2}."""
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method"):
            name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))
            if isinstance(node.target, torch._ops.OpOverload):
                name = str(node.target)
            counts[name] = counts.get(name, 0) + 1
    return counts
