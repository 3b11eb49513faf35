"""The CUDA (Triton) implementation of `ascend_graph::rms_norm_qkv_rope` (`kernels/decode_qkv_rope.py`): one
kernel, one program per head of the qkv output (Hq + 2 Hkv programs).

A program owns the D rows of its head's weight as two [D / 2, BLOCK_K] tiles, the first and the second half of the
head, and loops over K once with the M tokens in registers, as the decode GEMV does (`decode_triton_kernel.py`,
whose input RMSNorm prologue, streamed or exact, it reuses). Keeping the halves apart puts the pairs the rotation
mixes (i, i + D / 2) in the same place of two accumulators, so the epilogue needs no shuffle: it rounds the two
[M, D / 2] results to the dtype, normalises the head (the sum of squares of both halves, the q or the k norm weight
by the program's head), rotates them with cos / sin [M, D / 2] and stores. v heads skip the epilogue and store the
GEMV's output. No program waits for another and there is no second pass.

The grid is small: 32 programs at the Qwen3-0.6B site (Hq 16, Hkv 8), 48 at 8B, where the plain decode GEMV of
the same weight runs 128 to 384 row blocks; whether so few programs stream the weight as fast is not measured.

Calls the kernel does not take (more than MAX_TOKENS tokens, D / 2 not a power of two >= 16, a weight whose rows
are not contiguous, cos / sin with a strided last dimension) go to the reference; so does a call whose kernel
cannot be built here (logged once per reason). Runs on CPU tensors under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from . import decode_ops
from . import decode_qkv_rope as qkv_ops
from .decode_triton import BUILD_ERRORS, MAX_TOKENS, _rows, _warn_once, streams_norm
from .decode_triton_kernel import _dot_t, _row_rstd, _streamed_x_tile, _x_tile
from .decode_tuning import MIN_BLOCK, SHARED_BUDGET, DecodeConfig, GemvShape, default_config, stage_bytes


@triton.jit
def _round(value, dtype: tl.constexpr):
    """`value` rounded to `dtype` and back to float32 (what each op of the unfused graph does to its result)."""
    return value.to(dtype).to(tl.float32)


@triton.jit
def _norm_rope(first, second, pid, qn_ptr, kn_ptr, cos_ptr, sin_ptr, rows, m_mask, cos_stride, sin_stride, head_eps,
               HQ, HALF: tl.constexpr):  # fmt: skip
    """One head's halves (in the dtype) normalised by q_norm (heads < HQ) or k_norm, then rotated; rounded as
    rms_norm_rope's reference rounds."""
    dtype = first.dtype
    a = first.to(tl.float32)
    b = second.to(tl.float32)
    rstd = tl.rsqrt((tl.sum(a * a, axis=1) + tl.sum(b * b, axis=1)) / (2 * HALF) + head_eps)[:, None]
    halves = tl.arange(0, HALF)
    is_q = pid < HQ
    w_first = tl.where(is_q, tl.load(qn_ptr + halves), tl.load(kn_ptr + halves)).to(tl.float32)
    w_second = tl.where(is_q, tl.load(qn_ptr + HALF + halves), tl.load(kn_ptr + HALF + halves)).to(tl.float32)
    a = _round(_round(a * rstd, dtype) * w_first[None, :], dtype)
    b = _round(_round(b * rstd, dtype) * w_second[None, :], dtype)
    mask = m_mask[:, None]
    cos = tl.load(cos_ptr + rows[:, None] * cos_stride + halves[None, :], mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + rows[:, None] * sin_stride + halves[None, :], mask=mask, other=0.0).to(tl.float32)
    rotated_first = _round(a * cos, dtype) - _round(b * sin, dtype)
    rotated_second = _round(b * cos, dtype) + _round(a * sin, dtype)
    return rotated_first.to(dtype), rotated_second.to(dtype)


@triton.jit
def rms_norm_qkv_rope_kernel(
    x_ptr, res_ptr, nw_ptr, w_ptr, out_ptr, total_ptr, qn_ptr, kn_ptr, cos_ptr, sin_ptr,
    M, N, K, x_stride, res_stride, w_stride, cos_stride, sin_stride, eps, head_eps, HQ, ROTATED_HEADS,
    STREAM_NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr, FP32_SUM: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, HALF: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    m_mask = rows < M
    cols = pid * (2 * HALF) + tl.arange(0, HALF)  # the head's first half; the second is HALF rows further
    rstd = tl.zeros((BLOCK_M,), tl.float32)
    if not STREAM_NORM:
        total_mask = rows < tl.where(pid == 0, M, 0)  # program 0 alone writes x + residual
        rstd = _row_rstd(
            x_ptr, res_ptr, total_ptr, rows, m_mask, K, x_stride, res_stride, eps, total_mask,
            HAS_RESIDUAL, FP32_SUM, BLOCK_M, BLOCK_K,
        )  # fmt: skip
    first_rows = w_ptr + cols.to(tl.int64)[:, None] * w_stride
    second_rows = w_ptr + (cols.to(tl.int64) + HALF)[:, None] * w_stride
    acc_first = tl.zeros((BLOCK_M, HALF), tl.float32)
    acc_second = tl.zeros((BLOCK_M, HALF), tl.float32)
    squares = tl.zeros((BLOCK_M,), tl.float32)
    row_one = tl.where(m_mask, 1.0, 0.0)  # see decode_linear_kernel
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        if STREAM_NORM:
            owned_rows = rows < tl.where((k0 // BLOCK_K) % tl.num_programs(0) == pid, M, 0)
            x, tile_squares = _streamed_x_tile(
                x_ptr, res_ptr, nw_ptr, total_ptr, rows, m_mask, ks, k_mask, K, x_stride, res_stride, owned_rows,
                row_one, HAS_RESIDUAL, FP32_SUM,
            )  # fmt: skip
            squares += tile_squares
        else:
            x = _x_tile(
                x_ptr, res_ptr, nw_ptr, rows, m_mask, ks, k_mask, x_stride, res_stride, rstd,
                True, HAS_RESIDUAL, FP32_SUM,
            )  # fmt: skip
        w_mask = k_mask[None, :]
        acc_first = _dot_t(x, tl.load(first_rows + ks[None, :], mask=w_mask, other=0.0), acc_first, IEEE)
        acc_second = _dot_t(x, tl.load(second_rows + ks[None, :], mask=w_mask, other=0.0), acc_second, IEEE)
    if STREAM_NORM:
        scale = tl.rsqrt(squares / K + eps)[:, None]
        acc_first = acc_first * scale
        acc_second = acc_second * scale
    dtype = out_ptr.dtype.element_ty
    first = acc_first.to(dtype)
    second = acc_second.to(dtype)
    if pid < ROTATED_HEADS:
        first, second = _norm_rope(
            first, second, pid, qn_ptr, kn_ptr, cos_ptr, sin_ptr, rows, m_mask, cos_stride, sin_stride, head_eps,
            HQ, HALF,
        )  # fmt: skip
    out = out_ptr + rows[:, None] * N + cols[None, :]
    mask = m_mask[:, None] & (cols < N)[None, :]
    tl.store(out, first, mask=mask)
    tl.store(out + HALF, second, mask=mask)


def qkv_rope_config(x: torch.Tensor, weight: torch.Tensor, half: int, residual: bool) -> DecodeConfig:
    """The decode GEMV's default for the same stream (two weight row blocks a program, the norm prologue), with
    block_n the half head and as many pipeline stages as fit the shared-memory budget."""
    shape = GemvShape(weight.shape[0] // 2, x.shape[-1], x.shape[0], 2, 2 if residual else 1, x.element_size(), True)
    config = dataclasses.replace(default_config(shape), block_n=half)
    stages = config.num_stages
    while stages > 1 and stages * stage_bytes(shape, half, config.block_k) > SHARED_BUDGET:
        stages -= 1
    return dataclasses.replace(config, num_stages=stages)


def launch(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    head_eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    num_kv_heads: int,
    fp32_sum: bool = False,
    exact_rounding: bool = False,
    config: DecodeConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel on checked, kernel-ready tensors (see `takes`)."""
    half = q_norm.shape[0] // 2
    config = config or qkv_rope_config(x, weight, half, residual is not None)
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    total = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    res = residual if residual is not None else x
    tokens, k = x.shape
    rms_norm_qkv_rope_kernel[(num_q_heads + 2 * num_kv_heads,)](
        x, res, norm_weight, weight, out, total, q_norm, k_norm, cos, sin,
        tokens, weight.shape[0], k, x.stride(0), res.stride(0), weight.stride(0), cos.stride(0), sin.stride(0),
        eps, head_eps, num_q_heads, num_q_heads + num_kv_heads,
        STREAM_NORM=streams_norm(x.dtype, exact_rounding), HAS_RESIDUAL=residual is not None, FP32_SUM=fp32_sum,
        IEEE=x.dtype == torch.float32, BLOCK_M=max(MIN_BLOCK, triton.next_power_of_2(tokens)), HALF=half,
        BLOCK_K=min(config.block_k, max(16, triton.next_power_of_2(k))),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return out, total


def takes(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, weight: torch.Tensor,
          q_norm: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:  # fmt: skip
    """Whether the kernel takes these (checked) tensors, else the reference runs."""
    half = q_norm.shape[0] // 2
    return (
        0 < x.shape[0] <= MAX_TOKENS
        and x.shape[1] > 0
        and half >= MIN_BLOCK
        and half & (half - 1) == 0
        and weight.stride(1) == 1
        and _rows(x) is not None
        and (residual is None or (residual.shape == x.shape and _rows(residual) is not None))
        and norm_weight.shape == x.shape[-1:]
        and norm_weight.is_contiguous()
        and all(t.stride(-1) == 1 for t in (cos, sin))
    )


def rms_norm_qkv_rope_cuda(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    head_eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    num_kv_heads: int,
    fp32_sum: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op's CUDA implementation: the kernel where `takes` says so, else the reference."""
    args = (x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, num_q_heads, num_kv_heads,
            fp32_sum, exact_rounding)  # fmt: skip
    qkv_ops.check_qkv_rope(x, weight, q_norm, k_norm, cos, sin, num_q_heads, num_kv_heads)
    if not takes(x, residual, norm_weight, weight, q_norm, cos, sin):
        return qkv_ops.rms_norm_qkv_rope_reference(*args)  # also raises the named error on bad input
    decode_ops.check_linear(qkv_ops.OP, x, weight, residual, norm_weight)
    try:
        return launch(*args[:5], q_norm.contiguous(), k_norm.contiguous(), *args[7:])
    except BUILD_ERRORS as error:
        _warn_once(f"{qkv_ops.OP} weight {tuple(weight.shape)}, {x.dtype}: {type(error).__name__}: {error}")
        return qkv_ops.rms_norm_qkv_rope_reference(*args)


def register() -> None:
    """Make the Triton kernel the CUDA implementation of rms_norm_qkv_rope."""
    qkv_ops.rms_norm_qkv_rope.register_kernel("cuda")(rms_norm_qkv_rope_cuda)
