"""The CUDA (Triton) implementation of the decode linear ops of `kernels/decode_ops.py`: checks, block sizes
(`kernels/decode_tuning.py`) and the launch of the one kernel of `kernels/decode_triton_kernel.py`, whose
docstring says what a program does.

`rms_norm_linear` streams its RMSNorm through the GEMV (one pass over x, rstd applied in the epilogue) unless the
call asks for `exact_rounding` or x is float16: s * norm_weight is rounded to the dtype before the tensor cores
take it, and in float16 that product can overflow (or lose its precision below 2^-14) where the normalised value
the unfused graph rounds would not; bfloat16 has float32's range, float32 does not round there.

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
from triton.compiler.errors import CompilationError
from triton.runtime.errors import OutOfResources, PTXASError

from . import decode_ops as ops
from .decode_triton_kernel import decode_linear_kernel
from .decode_tuning import DecodeConfig, GemvShape, config_for

logger = logging.getLogger(__name__)

MAX_TOKENS = 32  # beyond this many tokens a GEMM (cuBLAS) is the right kernel, not a GEMV
# What a launch that cannot build its kernel here raises (a tuned config too big for this device's shared memory):
# the call then runs the reference, with one logged reason.
BUILD_ERRORS = (CompilationError, OutOfResources, PTXASError)


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


def streams_norm(dtype: torch.dtype, exact_rounding: bool) -> bool:
    """Whether rms_norm_linear takes the streamed norm (see the module docstring) for this dtype and request."""
    return not exact_rounding and dtype != torch.float16


def kernel_flags(
    dtype: torch.dtype,
    *,
    norm: bool = False,
    exact_rounding: bool = False,
    residual: bool = False,
    fp32_sum: bool = False,
    silu_mul: bool = False,
    add: bool = False,
) -> dict[str, bool]:
    """The kernel's compile-time flags for a call (shared with `kernels/decode_resources.py`)."""
    return {
        "NORM": norm, "STREAM_NORM": norm and streams_norm(dtype, exact_rounding), "HAS_RESIDUAL": residual,
        "FP32_SUM": fp32_sum, "SILU_MUL": silu_mul, "ADD_OUT": add, "IEEE": dtype == torch.float32,
    }  # fmt: skip


def gemv_shape(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    residual: torch.Tensor | None = None,
    norm: bool = False,
    silu_mul: bool = False,
) -> GemvShape:
    """The shape `config_for` picks block sizes by, for a call of `launch` with these arguments."""
    tokens = x.numel() // x.shape[-1]
    n = weight.shape[0] // 2 if silu_mul else weight.shape[0]
    x_inputs = 1 if residual is None else 2
    return GemvShape(n, x.shape[-1], tokens, 2 if silu_mul else 1, x_inputs, x.element_size(), norm)


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
    exact_rounding: bool = False,
    config: DecodeConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the kernel on checked, kernel-ready tensors: (out [..., N or N/2], x + residual when normalising)."""
    x2 = _rows(x)
    assert x2 is not None
    shape = gemv_shape(x, weight, residual=residual, norm=norm_weight is not None, silu_mul=silu_mul)
    config = config or config_for(shape)
    out = torch.empty((*x.shape[:-1], shape.n), dtype=x.dtype, device=x.device)
    total = torch.empty(x.shape, dtype=x.dtype, device=x.device) if norm_weight is not None else None
    res2 = _rows(residual) if residual is not None else x2
    add2 = _rows(add) if add is not None else out
    decode_linear_kernel[(triton.cdiv(shape.n, config.block_n),)](
        x2, res2, norm_weight if norm_weight is not None else weight, weight, out,
        total if total is not None else out, add2,
        shape.tokens, shape.n, shape.k, x2.stride(0), res2.stride(0), weight.stride(0), add2.stride(0), shape.n, eps,
        **kernel_flags(
            x.dtype, norm=norm_weight is not None, exact_rounding=exact_rounding, residual=residual is not None,
            fp32_sum=fp32_sum, silu_mul=silu_mul, add=add is not None,
        ),
        SQUARES_2D=config.squares_2d,
        NW_TILE=config.nw_tile,
        BLOCK_M=shape.block_m,
        BLOCK_N=config.block_n,
        BLOCK_K=min(config.block_k, max(16, triton.next_power_of_2(shape.k))),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip
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
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    args = (x, residual, norm_weight, eps, weight, fp32_sum, silu_mul, exact_rounding)
    if silu_mul:
        ops.check_gate_up("rms_norm_linear", weight)
    usable = norm_weight.shape == x.shape[-1:] and norm_weight.is_contiguous()
    if not usable or residual is not None and residual.shape != x.shape or not _takes(x, weight, residual):
        return ops.rms_norm_linear_reference(*args)  # also raises the named error on bad input
    ops.check_linear("rms_norm_linear", x, weight, residual, norm_weight)
    launched = _launch_or_none(
        x, weight, residual=residual, norm_weight=norm_weight, eps=eps, fp32_sum=fp32_sum, silu_mul=silu_mul,
        exact_rounding=exact_rounding,
    )  # fmt: skip
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
