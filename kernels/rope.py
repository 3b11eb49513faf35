"""`ascend_graph::rms_norm_rope`: per-head RMSNorm followed by rotary embedding (Qwen3's QK-norm + RoPE).

Reference semantics, exactly the unfused code:
    normed = (x.float() * rsqrt(mean(x.float()^2, -1) + eps)).to(x.dtype) * weight
    first, second = halves of normed's last dimension (size d = 2h)
    out = cat(first * cos1 - second * sin1, second * cos2 + first * sin2)
`cos`/`sin` broadcast against x's leading dimensions; their last dimension is either h ("half tables":
cos1 = cos2 = cos, vLLM's forward_native and ascend_graph.models.qwen3, written with chunk + cat) or d ("full
tables": cos1 = cos[:h], cos2 = cos[h:], transformers' `q * cos + rotate_half(q) * sin`). The kernel computes
what the pattern wrote, whichever table width it has; it never assumes the two halves of a full table are equal.
"""

from __future__ import annotations

import torch


def _check(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> int:
    dim = x.shape[-1]
    if dim % 2 or cos.shape[-1] not in (dim // 2, dim) or sin.shape[-1] != cos.shape[-1]:
        raise ValueError(
            f"ascend_graph::rms_norm_rope: head dim {dim} must be even and cos/sin last dims ({cos.shape[-1]}, "
            f"{sin.shape[-1]}) must both be {dim // 2} (half tables) or {dim} (full tables)"
        )
    return dim // 2


def rms_norm_rope_reference(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> torch.Tensor:
    half = _check(x, cos, sin)
    x32 = x.float()
    normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    first, second = normed[..., :half], normed[..., half:]
    cos1, cos2 = (cos, cos) if cos.shape[-1] == half else (cos[..., :half], cos[..., half:])
    sin1, sin2 = (sin, sin) if sin.shape[-1] == half else (sin[..., :half], sin[..., half:])
    return torch.cat((first * cos1 - second * sin1, second * cos2 + first * sin2), dim=-1)


@torch.library.custom_op("ascend_graph::rms_norm_rope", mutates_args=())
def rms_norm_rope(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> torch.Tensor:
    """RoPE(RMSNorm(x) * weight) over the last dimension; see the module docstring."""
    return rms_norm_rope_reference(x, weight, cos, sin, eps)


@rms_norm_rope.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> torch.Tensor:
    half = _check(x, cos, sin)
    dtype = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.promote_types(cos.dtype, sin.dtype))
    leading = torch.broadcast_shapes(x.shape[:-1], cos.shape[:-1], sin.shape[:-1])
    return x.new_empty((*leading, 2 * half), dtype=dtype)
