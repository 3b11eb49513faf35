"""Pass `add_rms_norm`: residual add + RMSNorm -> `ascend_graph::add_rms_norm`; a lone RMSNorm ->
`ascend_graph::rms_norm`.

Before (bfloat16, transformers / ascend_graph.models.qwen3 form; float32 graphs have no `_to_copy`):

    add      = aten.add.Tensor(hidden, residual)          # the new residual stream, also used downstream
    to_copy  = aten._to_copy(add, dtype=torch.float32)
    pow_1    = aten.pow.Tensor_Scalar(to_copy, 2)
    mean     = aten.mean.dim(pow_1, [-1], True)
    add_1    = aten.add.Tensor(mean, 1e-06)
    rsqrt    = aten.rsqrt(add_1)
    mul      = aten.mul.Tensor(to_copy, rsqrt)
    to_copy1 = aten._to_copy(mul, dtype=torch.bfloat16)
    mul_1    = aten.mul.Tensor(to_copy1, weight)          # transformers: mul(weight, to_copy1)

After:

    fused    = ascend_graph.add_rms_norm(hidden, residual, weight, 1e-06, False)
    mul_1    = getitem(fused, 0)
    add      = getitem(fused, 1)

vLLM's RMSNorm.forward_native adds in float32 (`x.to(float32) + residual.to(float32)`, residual cast back) and
normalises the float32 sum: matched as its own form and fused with fp32_sum=True. Forms without the add (the first
layer's input norm, QK-norm when `qk_norm_rope` does not run, vLLM pieces that start after attention) become
`ascend_graph::rms_norm(x, weight, eps)`. Any eps matches.
"""

from __future__ import annotations

from typing import Any

import torch

from .patterns import PatternPass


def _normalise(x32: torch.Tensor, eps: float) -> torch.Tensor:
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)


def add_norm_weight_after(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Any:
    total = x + residual
    return _normalise(total.to(torch.float32), eps).to(total.dtype) * weight, total


def add_norm_weight_before(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Any:
    total = x + residual
    return weight * _normalise(total.to(torch.float32), eps).to(total.dtype), total


def add_norm_fp32_sum(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Any:
    total32 = x.to(torch.float32) + residual.to(torch.float32)
    return _normalise(total32, eps).to(x.dtype) * weight, total32.to(x.dtype)


def fused_add_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Any:
    normed, total = torch.ops.ascend_graph.add_rms_norm(x, residual, weight, eps, False)
    return normed, total


def fused_add_norm_fp32_sum(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> Any:
    normed, total = torch.ops.ascend_graph.add_rms_norm(x, residual, weight, eps, True)
    return normed, total


def norm_weight_after(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _normalise(x.to(torch.float32), eps).to(x.dtype) * weight


def norm_weight_before(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * _normalise(x.to(torch.float32), eps).to(x.dtype)


def fused_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.ops.ascend_graph.rms_norm(x, weight, eps)


def _add_inputs(dtype: torch.dtype) -> list[Any]:
    return [torch.empty(4, 16, dtype=dtype), torch.empty(4, 16, dtype=dtype), torch.empty(16, dtype=dtype)]


def _norm_inputs(dtype: torch.dtype) -> list[Any]:
    return [torch.empty(4, 16, dtype=dtype), torch.empty(16, dtype=dtype)]


# Residual add + RMSNorm first, then the lone RMSNorms that are left.
PASSES = (
    PatternPass.with_eps(
        "add_rms_norm",
        [
            (add_norm_weight_after, fused_add_norm),
            (add_norm_weight_before, fused_add_norm),
            (add_norm_fp32_sum, fused_add_norm_fp32_sum),
        ],
        _add_inputs,
    ),
    PatternPass.with_eps("rms_norm", [(norm_weight_after, fused_norm), (norm_weight_before, fused_norm)], _norm_inputs),
)


def apply(gm: torch.fx.GraphModule) -> int:
    """Fuse residual add + RMSNorm first, then lone RMSNorms; returns the number of fused ops."""
    return sum(fusion(gm) for fusion in PASSES)
