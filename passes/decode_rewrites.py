"""Stages 2-4 of the `decode_gemv` pass (see `decode_layer.py`): rewrites around one linear node, found by walking
the ATen graph rather than by the pattern matcher, because their shapes are not constants a traced pattern could
hold (SiLU-mul splits the gate_up output at N / 2, whatever N the model has).

Each rewrite checks that the nodes it removes have no user outside the chain, and gives the nodes it places the
fake value their op computes, so that later passes (and inductor) see the same metadata as for traced nodes.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.experimental.symbolic_shapes import statically_known_true

aten = torch.ops.aten
DECODE_LINEAR = torch.ops.ascend_graph.decode_linear.default
GATE_UP_SILU = torch.ops.ascend_graph.decode_gate_up_silu.default
RMS_NORM_LINEAR = torch.ops.ascend_graph.rms_norm_linear.default
SILU_MUL_INDEX = 6  # rms_norm_linear(x, residual, norm_weight, eps, weight, fp32_sum, silu_mul)
END = 9223372036854775807  # what `x[..., d:]` traces to as the slice's end


def _val(node: Any) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


def linear_weight(node: Any) -> bool:
    """A weight parameter as vLLM and dynamo hand them over: a graph input or attribute of static 2-D shape."""
    value = _val(node)
    return (
        isinstance(node, torch.fx.Node)
        and node.op in ("placeholder", "get_attr")
        and value is not None
        and value.dim() == 2
        and all(isinstance(size, int) for size in value.shape)
    )


def is_linear(node: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node] | None:
    """(x, weight) when `node` is `mm(x, t(weight))` on a 2-D x of weight's dtype, else None."""
    if node.op != "call_function" or node.target is not aten.mm.default or len(node.args) != 2:
        return None
    x, transposed = node.args
    if not isinstance(transposed, torch.fx.Node) or not isinstance(x, torch.fx.Node):
        return None
    is_t = transposed.target is aten.t.default or (
        transposed.target is aten.permute.default and list(transposed.args[1]) == [1, 0]
    )
    weight = transposed.args[0] if is_t else None
    x_val = _val(x)
    if not linear_weight(weight) or x_val is None or x_val.dim() != 2 or x_val.dtype != _val(weight).dtype:
        return None
    if written_in_place(x) or written_in_place(weight):
        return None
    return x, weight


def written_in_place(node: Any) -> bool:
    """Whether an op writes `node` in place (vLLM's rotary embedding writes q and k): a fused op placed later in
    the graph than the op it replaces would read the written value."""
    return isinstance(node, torch.fx.Node) and any(
        isinstance(user.target, torch._ops.OpOverload) and user.target._schema.is_mutable for user in node.users
    )


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _slice_bounds(node: torch.fx.Node, source: torch.fx.Node) -> tuple[Any, Any] | None:
    """(start, end) of a step-1 slice of `source`'s last dimension (of two), else None."""
    if node.target is not aten.slice.Tensor or node.args[0] is not source:
        return None
    dim, start, end, step = (list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1 :])[:4]
    return (start, end) if dim in (1, -1) and step == 1 else None


def silu_mul_tail(out: torch.fx.Node, n: int) -> list[torch.fx.Node] | None:
    """The nodes of `silu(out[:, :n/2]) * out[:, n/2:]` (the product first) when they are `out`'s only users and
    use nothing else, else None."""
    half = n // 2
    if n % 2 or len(out.users) != 2:
        return None
    bounds = {user: _slice_bounds(user, out) for user in out.users}
    gate = next((user for user, b in bounds.items() if b is not None and b[0] in (0, None) and b[1] == half), None)
    up = next((user for user, b in bounds.items() if b is not None and b[0] == half and b[1] in (END, n)), None)
    silu = _only_user(gate) if gate is not None else None
    if up is None or silu is None or silu.target is not aten.silu.default:
        return None
    product = _only_user(silu)
    if product is None or product.target is not aten.mul.Tensor or _only_user(up) is not product:
        return None
    if set(product.args) != {silu, up} or product.kwargs:
        return None
    return [product, silu, gate, up]


def residual_add(out: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node] | None:
    """(add, residual) when `out`'s only user is `out + residual` of out's shape and dtype, else None."""
    add = _only_user(out)
    if add is None or add.target is not aten.add.Tensor or len(add.args) != 2 or add.kwargs:
        return None
    residual = add.args[1] if add.args[0] is out else add.args[0]
    out_val, res_val = _val(out), _val(residual)
    if residual is out or res_val is None or out_val is None or res_val.dtype != out_val.dtype:
        return None
    if written_in_place(residual):
        return None
    same = res_val.dim() == out_val.dim() and all(
        statically_known_true(a == b) for a, b in zip(res_val.shape, out_val.shape, strict=True)
    )
    return (add, residual) if same else None


def _fake(target: Any, args: Sequence[Any]) -> Any:
    """What `target` returns on the args' fake values (in their fake mode)."""
    values = [arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg for arg in args]
    mode = next(value.fake_mode for value in values if isinstance(value, FakeTensor))
    with mode:
        # Nodes the pattern matcher placed carry values of its own fake mode: same sizes, rebuilt in this one.
        values = [_in_mode(value, mode) for value in values]
        return target(*values)


def _in_mode(value: Any, mode: Any) -> Any:
    if not isinstance(value, FakeTensor) or value.fake_mode is mode:
        return value
    return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)


def _place(graph: torch.fx.Graph, before: torch.fx.Node, target: Any, args: tuple[Any, ...]) -> torch.fx.Node:
    with graph.inserting_before(before):
        node = graph.call_function(target, args)
    node.meta["val"] = _fake(target, args)
    return node


def _replace(graph: torch.fx.Graph, old: torch.fx.Node, new: torch.fx.Node, dead: Sequence[torch.fx.Node]) -> None:
    old.replace_all_uses_with(new)
    for node in dead:  # users first, so that each is unused when erased
        graph.erase_node(node)


def _silu_into_norm_linear(graph: torch.fx.Graph, fused: torch.fx.Node) -> bool:
    """Turn `rms_norm_linear(..., silu_mul=False)` whose output feeds SiLU-mul into its silu_mul=True form."""
    # Traced calls leave out arguments at their defaults (fp32_sum=False, silu_mul=False).
    args = [*fused.args, False, False][: SILU_MUL_INDEX + 1]
    out = next((user for user in fused.users if user.target is operator.getitem and user.args[1] == 0), None)
    if fused.kwargs or args[SILU_MUL_INDEX] or out is None:
        return False
    tail = silu_mul_tail(out, _val(args[4]).shape[0])
    if tail is None:
        return False
    fused.args = (*args[:SILU_MUL_INDEX], True)
    fused.target = RMS_NORM_LINEAR
    fused.meta["val"] = _fake(fused.target, fused.args)
    for user in fused.users:
        user.meta["val"] = fused.meta["val"][user.args[1]]
    _replace(graph, tail[0], out, tail)
    return True


def rewrite_linears(gm: torch.fx.GraphModule) -> dict[str, int]:
    """Stages 2-4 in place; the count of each kind of rewrite."""
    graph = gm.graph
    counts = {"norm_linear_silu": 0, "gate_up_silu": 0, "linear_residual": 0, "linear": 0}
    for node in list(graph.nodes):
        if node.target is RMS_NORM_LINEAR and _silu_into_norm_linear(graph, node):
            counts["norm_linear_silu"] += 1
    for node in list(graph.nodes):
        linear = is_linear(node)
        if linear is None:
            continue
        x, weight = linear
        tail = silu_mul_tail(node, _val(weight).shape[0])
        added = residual_add(node) if tail is None else None
        if tail is not None:
            _replace(graph, tail[0], _place(graph, tail[0], GATE_UP_SILU, (x, weight)), [*tail, node])
            counts["gate_up_silu"] += 1
        elif added is not None:
            add, residual = added
            _replace(graph, add, _place(graph, add, DECODE_LINEAR, (x, weight, residual)), [add, node])
            counts["linear_residual"] += 1
        else:
            _replace(graph, node, _place(graph, node, DECODE_LINEAR, (x, weight, None)), [node])
            counts["linear"] += 1
    return counts
