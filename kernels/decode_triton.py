"""The CUDA (Triton) implementation of the decode linear ops of `kernels/decode_ops.py`.

One kernel serves all of them, its prologue and epilogue picked by compile-time flags. Each program owns
`block_n` output columns (weight rows; for gate-up, the same columns of the gate and of the up half) and loops
over K once: it loads a [block_n, block_k] tile of the weight per step, the [M, block_k] slice of x beside it, and
accumulates x @ tile^T in float32 on the tensor cores (tokens padded to 16; the padding is never loaded). Every
weight element is read once; there is no split-K and no second pass.

- RMSNorm prologue: each program first walks x (and the residual) once to get every token's rstd (M x K values,
  a few KB from L2), then normalises each x slice as it loads it. Program 0 alone writes x + residual.
- SiLU-mul epilogue: gate and up accumulators are rounded to the dtype (as F.linear's output is), then
  silu(gate) rounded, then the product.
- Residual epilogue: the accumulator rounded to the dtype, plus the residual, rounded.

Calls the kernel does not take (more than MAX_TOKENS tokens, a weight whose last dimension is not contiguous, x
not viewable as [M, K] rows) go to the reference, i.e. cuBLAS through F.linear: correct, not fused; so does a call
whose kernel cannot be built on this device (logged once per reason).
Runs on CPU tensors under TRITON_INTERPRET=1 (how the CPU lane checks the maths).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import triton
import triton.language as tl
from triton.compiler.errors import CompilationError
from triton.runtime.errors import OutOfResources, PTXASError

from . import decode_ops as ops
from .decode_tuning import DecodeConfig, config_for

logger = logging.getLogger(__name__)

MAX_TOKENS = 32  # beyond this many tokens a GEMM (cuBLAS) is the right kernel, not a GEMV
# What a launch that cannot build its kernel here raises (a tuned config too big for this device's shared memory):
# the call then runs the reference, with one logged reason.
BUILD_ERRORS = (CompilationError, OutOfResources, PTXASError)


@triton.jit
def _x_tile(
    x_ptr,
    res_ptr,
    nw_ptr,
    rows,
    m_mask,
    ks,
    k_mask,
    x_stride,
    res_stride,
    rstd,
    NORM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
):
    """The [BLOCK_M, BLOCK_K] slice of the GEMV's input, normalised when NORM, in x's dtype."""
    mask = m_mask[:, None] & k_mask[None, :]
    x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :], mask=mask, other=0.0)
    if NORM:
        base = x.to(tl.float32)
        if HAS_RESIDUAL:
            res = tl.load(res_ptr + rows[:, None] * res_stride + ks[None, :], mask=mask, other=0.0)
            base = base + res.to(tl.float32)
            if not FP32_SUM:
                base = base.to(x.dtype).to(tl.float32)
        nw = tl.load(nw_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
        normed = (base * rstd[:, None]).to(x.dtype).to(tl.float32)
        x = (normed * nw[None, :]).to(x.dtype)
    return x


@triton.jit
def _row_rstd(
    x_ptr,
    res_ptr,
    total_ptr,
    rows,
    m_mask,
    K,
    x_stride,
    res_stride,
    eps,
    total_mask,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """rsqrt(mean((x + residual)^2) + eps) per token; also stores x + residual ([M, K], packed) for
    the rows of `total_mask`."""
    squares = tl.zeros((BLOCK_M,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        mask = m_mask[:, None] & (ks < K)[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :], mask=mask, other=0.0)
        base = x.to(tl.float32)
        if HAS_RESIDUAL:
            res = tl.load(res_ptr + rows[:, None] * res_stride + ks[None, :], mask=mask, other=0.0)
            base = base + res.to(tl.float32)
        rounded = base.to(x.dtype)
        if HAS_RESIDUAL and not FP32_SUM:
            base = rounded.to(tl.float32)
        tl.store(total_ptr + rows[:, None] * K + ks[None, :], rounded, mask=mask & total_mask[:, None])
        squares += tl.sum(base * base, axis=1)
    return tl.rsqrt(squares / K + eps)


@triton.jit
def _decode_linear_kernel(
    x_ptr,
    res_ptr,
    nw_ptr,
    w_ptr,
    out_ptr,
    total_ptr,
    add_ptr,
    M,
    N,
    K,
    x_stride,
    res_stride,
    w_stride,
    add_stride,
    up_offset,
    eps,
    NORM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
    SILU_MUL: tl.constexpr,
    ADD_OUT: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    m_mask = rows < M
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = cols < N
    rstd = tl.zeros((BLOCK_M,), tl.float32)
    if NORM:
        # Only program 0 writes x + residual; the others compute the same rstd and store nothing.
        total_mask = rows < tl.where(pid == 0, M, 0)
        rstd = _row_rstd(
            x_ptr,
            res_ptr,
            total_ptr,
            rows,
            m_mask,
            K,
            x_stride,
            res_stride,
            eps,
            total_mask,
            HAS_RESIDUAL,
            FP32_SUM,
            BLOCK_M,
            BLOCK_K,
        )
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * w_stride
    # The up half's rows, `up_offset` (= I) rows further (no .to() on the argument: Triton makes an int argument
    # equal to 1 a compile-time constant).
    up_rows = w_ptr + (cols.to(tl.int64) + up_offset)[:, None] * w_stride
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        x = _x_tile(
            x_ptr, res_ptr, nw_ptr, rows, m_mask, ks, k_mask, x_stride, res_stride, rstd, NORM, HAS_RESIDUAL, FP32_SUM
        )
        w_mask = n_mask[:, None] & k_mask[None, :]
        w = tl.load(w_rows + ks[None, :], mask=w_mask, other=0.0)
        if IEEE:
            acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(w), acc)
        if SILU_MUL:
            up = tl.load(up_rows + ks[None, :], mask=w_mask, other=0.0)
            if IEEE:
                acc_up = tl.dot(x, tl.trans(up), acc_up, input_precision="ieee")
            else:
                acc_up = tl.dot(x, tl.trans(up), acc_up)
    dtype = out_ptr.dtype.element_ty
    result = acc.to(dtype)
    if SILU_MUL:
        gate = result.to(tl.float32)
        silu = (gate * tl.sigmoid(gate)).to(dtype).to(tl.float32)
        result = (silu * acc_up.to(dtype).to(tl.float32)).to(dtype)
    out_mask = m_mask[:, None] & n_mask[None, :]
    if ADD_OUT:
        add = tl.load(add_ptr + rows[:, None] * add_stride + cols[None, :], mask=out_mask, other=0.0)
        result = (result.to(tl.float32) + add.to(tl.float32)).to(dtype)
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], result, mask=out_mask)


def _rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """`t` as [M, last dim] rows with a contiguous last dimension, as a view, else None."""
    if t is None or t.stride(-1) != 1:
        return None
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError:
        return None


def _takes(x: torch.Tensor, weight: torch.Tensor, *others: torch.Tensor | None) -> bool:
    """Whether the kernel takes these tensors (else the reference runs)."""
    rows = x.numel() // max(x.shape[-1], 1)
    return (
        0 < rows <= MAX_TOKENS
        and x.shape[-1] > 0
        and weight.shape[0] > 0
        and weight.stride(1) == 1
        and _rows(x) is not None
        and all(_rows(t) is not None for t in others if t is not None)
    )


def launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    residual: torch.Tensor | None = None,
    norm_weight: torch.Tensor | None = None,
    eps: float = 0.0,
    fp32_sum: bool = False,
    silu_mul: bool = False,
    add: torch.Tensor | None = None,
    config: DecodeConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the kernel on checked, kernel-ready tensors: (out [..., N or N/2], x + residual when normalising)."""
    x2 = _rows(x)
    assert x2 is not None
    tokens, k = x2.shape
    n = weight.shape[0] // 2 if silu_mul else weight.shape[0]
    config = config or config_for(n, k)
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    total = torch.empty(x.shape, dtype=x.dtype, device=x.device) if norm_weight is not None else None
    res2 = _rows(residual) if residual is not None else x2
    add2 = _rows(add) if add is not None else out
    _decode_linear_kernel[(triton.cdiv(n, config.block_n),)](
        x2,
        res2,
        norm_weight if norm_weight is not None else weight,
        weight,
        out,
        total if total is not None else out,
        add2,
        tokens,
        n,
        k,
        x2.stride(0),
        res2.stride(0),
        weight.stride(0),
        add2.stride(0),
        n,
        eps,
        NORM=norm_weight is not None,
        HAS_RESIDUAL=residual is not None,
        FP32_SUM=fp32_sum,
        SILU_MUL=silu_mul,
        ADD_OUT=add is not None,
        IEEE=x.dtype == torch.float32,
        BLOCK_M=max(16, triton.next_power_of_2(tokens)),
        BLOCK_N=config.block_n,
        BLOCK_K=min(config.block_k, max(16, triton.next_power_of_2(k))),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return out, total


@functools.lru_cache(maxsize=64)
def _warn_once(reason: str) -> None:
    logger.warning("ascend_graph decode kernel not built, the reference runs instead: %s", reason)


def _launch_or_none(x: torch.Tensor, weight: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Any] | None:
    """`launch`, or None (logged once per reason) when the kernel cannot be built for this call's shape here."""
    try:
        return launch(x, weight, **kwargs)
    except BUILD_ERRORS as error:
        flags = sorted(key for key, value in kwargs.items() if value is not None and value is not False)
        _warn_once(f"weight {tuple(weight.shape)}, {x.dtype}, {flags}: {type(error).__name__}: {error}")
        return None


def decode_linear_cuda(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    ops.check_linear("decode_linear", x, weight, residual)
    shape_ok = residual is None or residual.shape == (*x.shape[:-1], weight.shape[0])
    launched = _launch_or_none(x, weight, add=residual) if shape_ok and _takes(x, weight, residual) else None
    return ops.decode_linear_reference(x, weight, residual) if launched is None else launched[0]


def decode_gate_up_silu_cuda(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    ops.check_linear("decode_gate_up_silu", x, weight)
    ops.check_gate_up("decode_gate_up_silu", weight)
    launched = _launch_or_none(x, weight, silu_mul=True) if _takes(x, weight) else None
    return ops.decode_gate_up_silu_reference(x, weight) if launched is None else launched[0]


def rms_norm_linear_cuda(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    fp32_sum: bool = False,
    silu_mul: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    args = (x, residual, norm_weight, eps, weight, fp32_sum, silu_mul)
    if silu_mul:
        ops.check_gate_up("rms_norm_linear", weight)
    usable = norm_weight.shape == x.shape[-1:] and norm_weight.is_contiguous()
    if not usable or residual is not None and residual.shape != x.shape or not _takes(x, weight, residual):
        return ops.rms_norm_linear_reference(*args)  # also raises the named error on bad input
    ops.check_linear("rms_norm_linear", x, weight, residual, norm_weight)
    launched = _launch_or_none(
        x, weight, residual=residual, norm_weight=norm_weight, eps=eps, fp32_sum=fp32_sum, silu_mul=silu_mul
    )
    if launched is None:
        return ops.rms_norm_linear_reference(*args)
    out, total = launched
    assert total is not None
    return out, total


def register() -> None:
    """Make the Triton kernel the CUDA implementation of the decode linear ops."""
    ops.decode_linear.register_kernel("cuda")(decode_linear_cuda)
    ops.decode_gate_up_silu.register_kernel("cuda")(decode_gate_up_silu_cuda)
    ops.rms_norm_linear.register_kernel("cuda")(rms_norm_linear_cuda)
