"""CUDA implementations of the fused ops, in Triton (imported only where triton imports; torch 2.11 + triton 3.6
on the H100 lane). Each kernel reproduces the reference's roundings: values the unfused graph rounds to the
input dtype (the residual sum, the normalised value before the weight, silu before the product) are rounded here
too; everything else is computed in float32. One program per row (per head row for rms_norm_rope); SwiGLU tiles
its columns.

Layouts the kernels take: the last dimension contiguous, rows at a fixed stride (a slice of a merged gate_up
projection qualifies). Anything else (broadcast residuals, more than three leading dimensions for the rotary
tables) goes through the reference implementation, still correct, just not fused.

The launchers also run on CPU tensors under TRITON_INTERPRET=1, which is how the CPU lane checks their maths.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import norm as rms_norm_ops
from . import rope as rope_ops
from . import swiglu as swiglu_ops


@triton.jit
def _add_rms_norm_kernel(
    x_ptr,
    res_ptr,
    w_ptr,
    out_ptr,
    sum_ptr,
    x_stride,
    res_stride,
    n_cols,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    base = x.to(tl.float32)
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + row * res_stride + cols, mask=mask, other=0.0)
        total = base + res.to(tl.float32)
        rounded = total.to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * n_cols + cols, rounded, mask=mask)
        if FP32_SUM:
            base = total
        else:
            base = rounded.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(base * base, axis=0) / n_cols + eps)
    normed = (base * rstd).to(x.dtype).to(tl.float32)
    weight = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, (normed * weight).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_rope_kernel(
    x_ptr,
    w_ptr,
    cos_ptr,
    sin_ptr,
    out_ptr,
    n1,
    n2,
    xs0,
    xs1,
    xs2,
    cs0,
    cs1,
    cs2,
    ss0,
    ss1,
    ss2,
    half,
    eps,
    FULL_TABLES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    i2 = row % n2
    i1 = (row // n2) % n1
    i0 = row // (n1 * n2)
    cols = tl.arange(0, BLOCK)
    mask = cols < half
    x_row = x_ptr + i0 * xs0 + i1 * xs1 + i2 * xs2
    first = tl.load(x_row + cols, mask=mask, other=0.0)
    second = tl.load(x_row + half + cols, mask=mask, other=0.0)
    f32, s32 = first.to(tl.float32), second.to(tl.float32)
    rstd = tl.rsqrt((tl.sum(f32 * f32, axis=0) + tl.sum(s32 * s32, axis=0)) / (2 * half) + eps)
    w1 = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    w2 = tl.load(w_ptr + half + cols, mask=mask, other=0.0).to(tl.float32)
    n1_ = (f32 * rstd).to(first.dtype).to(tl.float32) * w1
    n2_ = (s32 * rstd).to(first.dtype).to(tl.float32) * w2
    # The product with the weight is rounded to its dtype, as eager does, before the rotation.
    n1_ = n1_.to(out_ptr.dtype.element_ty).to(tl.float32)
    n2_ = n2_.to(out_ptr.dtype.element_ty).to(tl.float32)
    cos_row = cos_ptr + i0 * cs0 + i1 * cs1 + i2 * cs2
    sin_row = sin_ptr + i0 * ss0 + i1 * ss1 + i2 * ss2
    cos1 = tl.load(cos_row + cols, mask=mask, other=0.0).to(tl.float32)
    sin1 = tl.load(sin_row + cols, mask=mask, other=0.0).to(tl.float32)
    if FULL_TABLES:
        cos2 = tl.load(cos_row + half + cols, mask=mask, other=0.0).to(tl.float32)
        sin2 = tl.load(sin_row + half + cols, mask=mask, other=0.0).to(tl.float32)
    else:
        cos2 = cos1
        sin2 = sin1
    out_row = out_ptr + row * (2 * half)
    tl.store(out_row + cols, (n1_ * cos1 - n2_ * sin1).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_row + half + cols, (n2_ * cos2 + n1_ * sin2).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _silu_and_mul_kernel(gate_ptr, up_ptr, out_ptr, gate_stride, up_stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(gate_ptr + row * gate_stride + cols, mask=mask, other=0.0)
    up = tl.load(up_ptr + row * up_stride + cols, mask=mask, other=0.0).to(tl.float32)
    g32 = gate.to(tl.float32)
    silu = (g32 * tl.sigmoid(g32)).to(gate.dtype).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, (silu * up).to(out_ptr.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor | None:
    """`t` as (rows, last dim) with a contiguous last dimension, as a view when possible, else None."""
    if t.dim() == 0 or t.stride(-1) != 1 and t.shape[-1] != 1:
        return None
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError:
        return None


def _warps(block: int) -> int:
    return 1 if block <= 256 else 4 if block <= 2048 else 8


def _rms_norm_launch(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float, fp32_sum: bool
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Run the (add +) RMSNorm kernel, or return None when the layout is not one the kernel takes."""
    if residual is not None and residual.shape != x.shape:
        return None
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1] or not weight.is_contiguous():
        return None
    x2 = _rows(x)
    res2 = _rows(residual) if residual is not None else x2
    if x2 is None or res2 is None:
        return None
    sum_dtype = x.dtype if residual is None or fp32_sum else torch.promote_types(x.dtype, residual.dtype)
    out = torch.empty(x.shape, dtype=torch.promote_types(sum_dtype, weight.dtype), device=x.device)
    total = torch.empty(x.shape, dtype=sum_dtype, device=x.device) if residual is not None else None
    block = triton.next_power_of_2(x.shape[-1])
    _add_rms_norm_kernel[(x2.shape[0],)](
        x2,
        res2,
        weight,
        out,
        total if total is not None else out,
        x2.stride(0),
        res2.stride(0),
        x.shape[-1],
        eps,
        HAS_RESIDUAL=residual is not None,
        FP32_SUM=fp32_sum,
        BLOCK=block,
        num_warps=_warps(block),
    )
    return out, total


def rms_norm_cuda(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    launched = _rms_norm_launch(x, None, weight, eps, False) if x.numel() else None
    return rms_norm_ops.rms_norm_reference(x, weight, eps) if launched is None else launched[0]


def add_rms_norm_cuda(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, fp32_sum: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    launched = _rms_norm_launch(x, residual, weight, eps, fp32_sum) if x.numel() else None
    if launched is None:
        return rms_norm_ops.add_rms_norm_reference(x, residual, weight, eps, fp32_sum)
    normed, total = launched
    assert total is not None
    return normed, total


def _leading3(t: torch.Tensor, shape: torch.Size) -> tuple[int, int, int] | None:
    """Strides of `t` broadcast to `shape` (leading dims only), padded to three leading dimensions."""
    leading = len(shape) - 1
    if leading > 3:
        return None
    strides = list(t.expand(*shape[:-1], t.shape[-1]).stride()[:-1])
    return tuple([0] * (3 - leading) + strides)  # type: ignore[return-value]


def rms_norm_rope_cuda(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> torch.Tensor:
    half = rope_ops._check(x, cos, sin)
    leading = torch.broadcast_shapes(x.shape[:-1], cos.shape[:-1], sin.shape[:-1])
    usable = (
        tuple(leading) == tuple(x.shape[:-1])
        and x.stride(-1) == 1
        and cos.stride(-1) == 1
        and sin.stride(-1) == 1
        and weight.dim() == 1
        and weight.is_contiguous()
        and x.numel() > 0
    )
    strides = [_leading3(t, x.shape) for t in (x, cos, sin)] if usable else [None]
    if any(s is None for s in strides):
        return rope_ops.rms_norm_rope_reference(x, weight, cos, sin, eps)
    xs, cs, ss = strides
    sizes = [1] * (3 - (x.dim() - 1)) + list(x.shape[:-1])
    dtype = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.promote_types(cos.dtype, sin.dtype))
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    block = triton.next_power_of_2(half)
    _rms_norm_rope_kernel[(x.numel() // x.shape[-1],)](
        x, weight, cos, sin, out, sizes[1], sizes[2], *xs, *cs, *ss, half, eps,
        FULL_TABLES=cos.shape[-1] != half, BLOCK=block, num_warps=_warps(block),
    )  # fmt: skip
    return out


def silu_and_mul_cuda(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    gate2, up2 = (_rows(gate), _rows(up)) if gate.shape == up.shape and gate.numel() else (None, None)
    if gate2 is None or up2 is None:
        return swiglu_ops.silu_and_mul_reference(gate, up)
    out = torch.empty(gate.shape, dtype=torch.promote_types(gate.dtype, up.dtype), device=gate.device)
    n_cols = gate.shape[-1]
    block = min(1024, triton.next_power_of_2(n_cols))
    grid = (gate2.shape[0], triton.cdiv(n_cols, block))
    _silu_and_mul_kernel[grid](gate2, up2, out, gate2.stride(0), up2.stride(0), n_cols, BLOCK=block, num_warps=4)
    return out


def register() -> None:
    """Make the Triton kernels the CUDA implementations of the ascend_graph ops."""
    rms_norm_ops.rms_norm.register_kernel("cuda")(rms_norm_cuda)
    rms_norm_ops.add_rms_norm.register_kernel("cuda")(add_rms_norm_cuda)
    rope_ops.rms_norm_rope.register_kernel("cuda")(rms_norm_rope_cuda)
    swiglu_ops.silu_and_mul.register_kernel("cuda")(silu_and_mul_cuda)
