"""Which graph inputs a dynamo graph writes to, read from the FX graph without running it.

An input written in place (a KV cache update, `x.add_(1)`, `out=`) must not be replaced by a private static copy:
the caller would never see the write. The analysis over-approximates on purpose: a tensor derived from an input
through any chain of first arguments counts as that input, so a false "mutated" costs at most a copy or an
address check, never a lost write.
"""

from __future__ import annotations

import operator

import torch
import torch.fx


def _writes_first_arg(node: torch.fx.Node) -> bool:
    target = node.target
    if node.op == "call_method":
        name = str(target)
        return name.endswith("_") and not name.startswith("_") or name in ("__setitem__", "copy_")
    if node.op != "call_function":
        return False
    if target is operator.setitem or "out" in node.kwargs or node.kwargs.get("inplace") is True:
        return True
    if isinstance(target, torch._ops.OpOverload):
        arguments = target._schema.arguments
        return bool(arguments) and arguments[0].alias_info is not None and arguments[0].alias_info.is_write
    name = getattr(target, "__name__", "")
    return name.endswith("_") and not name.startswith("_")


def _root_placeholder(node: object) -> torch.fx.Node | None:
    while isinstance(node, torch.fx.Node):
        if node.op == "placeholder":
            return node
        if not node.args:
            return None
        node = node.args[0]
    return None


def mutated_input_indices(gm: torch.fx.GraphModule) -> frozenset[int]:
    """Indices of placeholders that some node of `gm` may write in place."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    position = {node: index for index, node in enumerate(placeholders)}
    mutated: set[int] = set()
    for node in gm.graph.nodes:
        if not _writes_first_arg(node):
            continue
        written = [node.kwargs["out"]] if "out" in node.kwargs else node.args[:1]
        for value in written:
            root = _root_placeholder(value)
            if root is not None:
                mutated.add(position[root])
    return frozenset(mutated)
