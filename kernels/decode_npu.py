"""NPU implementations of the decode linear ops (`kernels/decode_ops.py`) through torch_npu. UNVERIFIED: no NPU
in reach; the names and signatures are checked against the torch-npu 2.11.0 sources by the conformance check
(`python -m ascend_graph.conformance`), never run.

torch_npu has no RMSNorm-prologue GEMV; what it has is used, the rest is the reference decomposition:
- decode_linear with a residual -> torch_npu.npu_fused_matmul(x, weight^T, x3=residual, fused_op_type="add")
  (the add happens before the product is rounded, so it may differ from the reference by one unit in the last
  place); without a residual -> F.linear (the reference).
- decode_gate_up_silu -> F.linear, then torch_npu.npu_swiglu on the merged [gate; up] output (its layout: gate
  half first), as `silu_and_mul_npu` does.
- rms_norm_linear -> the norm through `rms_norm_npu` / `add_rms_norm_npu` (npu_rms_norm / npu_add_rms_norm), then
  the linear (and npu_swiglu with silu_mul).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import decode_ops as ops
from .npu import add_rms_norm_npu, rms_norm_npu


def decode_linear_npu(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    import torch_npu

    ops.check_linear("decode_linear", x, weight, residual)
    if residual is None or x.dim() < 2 or residual.shape != (*x.shape[:-1], weight.shape[0]):
        return ops.decode_linear_reference(x, weight, residual)
    return torch_npu.npu_fused_matmul(x, weight.t(), x3=residual, fused_op_type="add")


def _gate_up_silu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    import torch_npu

    return torch_npu.npu_swiglu(F.linear(x, weight), dim=-1)


def decode_gate_up_silu_npu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    ops.check_linear("decode_gate_up_silu", x, weight)
    ops.check_gate_up("decode_gate_up_silu", weight)
    return _gate_up_silu(x, weight)


def rms_norm_linear_npu(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    fp32_sum: bool = False,
    silu_mul: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The norm kernel, then the linear: no streamed norm here, so `exact_rounding` changes nothing."""
    ops.check_linear("rms_norm_linear", x, weight, residual, norm_weight)
    if silu_mul:
        ops.check_gate_up("rms_norm_linear", weight)
    if norm_weight.shape != x.shape[-1:] or residual is not None and residual.shape != x.shape:
        return ops.rms_norm_linear_reference(x, residual, norm_weight, eps, weight, fp32_sum, silu_mul)
    if residual is None:
        normed, total = rms_norm_npu(x, norm_weight, eps), x.clone()
    else:
        normed, total = add_rms_norm_npu(x, residual, norm_weight, eps, fp32_sum)
    out = _gate_up_silu(normed, weight) if silu_mul else F.linear(normed, weight)
    return out, total


def register() -> None:
    """Register the torch_npu implementations for the "npu" device (needs torch_npu imported)."""
    ops.decode_linear.register_kernel("npu")(decode_linear_npu)
    ops.decode_gate_up_silu.register_kernel("npu")(decode_gate_up_silu_npu)
    ops.rms_norm_linear.register_kernel("npu")(rms_norm_linear_npu)
