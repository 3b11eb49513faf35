"""Pass `qk_norm_rope`: per-head RMSNorm followed by rotary embedding (Qwen3's QK-norm + RoPE) ->
`ascend_graph::rms_norm_rope`, once for the queries and once for the keys.

Before (bfloat16, ascend_graph.models.qwen3 and vLLM's `_apply_rotary_emb_torch` form: half tables, chunk + cat):

    to_copy  = aten._to_copy(q, dtype=torch.float32)                   # q: (tokens, heads, head_dim)
    ...      = pow, mean, add eps, rsqrt, mul                           # RMSNorm in float32
    to_copy1 = aten._to_copy(mul, dtype=torch.bfloat16)
    mul_1    = aten.mul.Tensor(to_copy1, q_weight)
    split    = aten.split.Tensor(mul_1, 64, -1)                         # first, second = chunk(2)
    mul_2    = aten.mul.Tensor(split[0], cos); mul_3 = aten.mul.Tensor(split[1], sin); sub = aten.sub.Tensor(...)
    mul_4    = aten.mul.Tensor(split[1], cos); mul_5 = aten.mul.Tensor(split[0], sin); add_1 = aten.add.Tensor(...)
    cat      = aten.cat([sub, add_1], -1)

After:

    cat      = ascend_graph.rms_norm_rope(q, q_weight, cos, sin, 1e-06)

transformers' Qwen3 normalises (tokens, seq, heads, head_dim), transposes to (batch, heads, seq, head_dim) and
applies `q * cos + rotate_half(q) * sin` with full-width tables: matched too, and replaced by
`rms_norm_rope(q, w, cos.transpose(1, 2), sin.transpose(1, 2), eps).transpose(1, 2)` (the rotation is elementwise,
so it commutes with the transpose). Not matched: vLLM on the CPU lane rotates with its own kernel
(`torch.ops._C.rotary_embedding`, in place on q and k, positions + cos_sin_cache); there only the QK-norm is fused
(by `add_rms_norm`, as a lone RMSNorm).
"""

from __future__ import annotations

from typing import Any

import torch

from .patterns import PatternPass


def _norm(x: torch.Tensor, weight: torch.Tensor, eps: float, weight_first: bool) -> torch.Tensor:
    x32 = x.to(torch.float32)
    normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight * normed if weight_first else normed * weight


def _rope_half_tables(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


def _rope_rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def half_tables(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> Any:
    return _rope_half_tables(_norm(x, weight, eps, False), cos, sin)


def half_tables_weight_first(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> Any:
    return _rope_half_tables(_norm(x, weight, eps, True), cos, sin)


def fused(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> Any:
    return torch.ops.ascend_graph.rms_norm_rope(x, weight, cos, sin, eps)


def transposed_rotate_half(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> Any:
    return _rope_rotate_half(_norm(x, weight, eps, True).transpose(1, 2), cos, sin)


def transposed_rotate_half_weight_after(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> Any:
    return _rope_rotate_half(_norm(x, weight, eps, False).transpose(1, 2), cos, sin)


def fused_transposed(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> Any:
    out = torch.ops.ascend_graph.rms_norm_rope(x, weight, cos.transpose(1, 2), sin.transpose(1, 2), eps)
    return out.transpose(1, 2)


def _half_inputs(dtype: torch.dtype) -> list[Any]:
    # (tokens, heads, head_dim) with (tokens, 1, head_dim / 2) tables
    return [torch.empty(2, 4, 32, dtype=dtype), torch.empty(32, dtype=dtype), torch.empty(2, 1, 16, dtype=dtype),
            torch.empty(2, 1, 16, dtype=dtype)]  # fmt: skip


def _transposed_inputs(dtype: torch.dtype) -> list[Any]:
    # transformers: (batch, seq, heads, head_dim) normalised, then (batch, heads, seq, head_dim) with
    # (batch, 1, seq, head_dim) tables
    return [torch.empty(2, 3, 4, 32, dtype=dtype), torch.empty(32, dtype=dtype), torch.empty(2, 1, 3, 32, dtype=dtype),
            torch.empty(2, 1, 3, 32, dtype=dtype)]  # fmt: skip


PASSES = (
    PatternPass.with_eps(
        "qk_norm_rope_half_tables", [(half_tables, fused), (half_tables_weight_first, fused)], _half_inputs
    ),
    PatternPass.with_eps(
        "qk_norm_rope_transposed",
        [(transposed_rotate_half, fused_transposed), (transposed_rotate_half_weight_after, fused_transposed)],
        _transposed_inputs,
    ),
)


def apply(gm: torch.fx.GraphModule) -> int:
    """Fuse every RMSNorm + RoPE on heads; returns the number of fused ops."""
    return sum(fusion(gm) for fusion in PASSES)
