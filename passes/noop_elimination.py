"""Pass `noop_elimination`: views, reshapes, slices, expands and casts that do nothing are removed; chains of
views on a contiguous base collapse into one view.

Before (a vLLM piece: the linear layer's input reshape of a tensor that already has that shape):

    view      = aten.view(output_2, [s72, 64])        # output_2: (s72, 64)
    reshape   = aten.view(view, [s72, 64])
    mm        = _C.onednn_mm(empty, reshape, None, handle)

After:

    mm        = _C.onednn_mm(empty, output_2, None, handle)

Removed: `view`/`_unsafe_view`/`reshape`/`expand` to the input's own shape, `slice` over a whole dimension with
step 1, `alias`, and `_to_copy` to the input's own dtype/device/layout when neither the input nor the copy is
written in place afterwards (the copy would otherwise protect one from the other). A view of a view of a
contiguous tensor becomes one view of that tensor. Shapes are compared with `statically_known_true`, so a
symbolic batch size is handled; anything not provably a no-op stays.
"""

from __future__ import annotations

import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

aten = torch.ops.aten
VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)
SAME_SHAPE_NOOPS = (*VIEWS, aten.expand.default, aten.alias.default)


def _value(node: object) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dim() == b.dim() and all(statically_known_true(x == y) for x, y in zip(a.shape, b.shape, strict=True))


def _written_in_place(node: torch.fx.Node) -> bool:
    for user in node.users:
        target = user.target
        if isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable:
            return True
    return False


def _noop_input(node: torch.fx.Node) -> torch.fx.Node | None:
    """The node's input if the node provably returns it unchanged, else None."""
    source = node.args[0] if node.args else None
    out, inp = _value(node), _value(source)
    if out is None or inp is None or not isinstance(source, torch.fx.Node):
        return None
    if node.target in SAME_SHAPE_NOOPS:
        return source if _same_shape(out, inp) else None
    if node.target is aten.slice.Tensor:
        dim, start, end, step = (list(node.args[1:]) + [0, None, None, 1][len(node.args) - 1 :])[:4]
        start, end = (arg.meta.get("val") if isinstance(arg, torch.fx.Node) else arg for arg in (start, end))
        if start is None and end is None and isinstance(node.args[2] if len(node.args) > 2 else None, torch.fx.Node):
            return None
        whole = (start in (None, 0)) and (end is None or statically_known_true(end >= inp.shape[dim])) and step == 1
        return source if whole and _same_shape(out, inp) else None
    if node.target is aten._to_copy.default:
        same = out.dtype == inp.dtype and out.device == inp.device and out.layout == inp.layout
        allowed = set(node.kwargs) <= {"dtype", "device", "layout"}
        if same and allowed and not _written_in_place(node) and not _written_in_place(source):
            return source
    return None


def apply(gm: torch.fx.GraphModule) -> int:
    """Remove no-op nodes and collapse view chains in place; returns the number of nodes removed or rebased."""
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        replacement = _noop_input(node)
        if replacement is not None:
            node.replace_all_uses_with(replacement)
            gm.graph.erase_node(node)
            changed += 1
            continue
        source = node.args[0] if node.args else None
        if node.target in VIEWS and isinstance(source, torch.fx.Node) and source.target in VIEWS:
            base = _value(source.args[0])
            if base is not None and base.is_contiguous():
                node.update_arg(0, source.args[0])
                if not source.users:
                    gm.graph.erase_node(source)
                changed += 1
    if changed:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return changed
