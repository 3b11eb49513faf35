"""NPU implementations of the fused ops through torch_npu's fused operators. UNVERIFIED: no NPU in reach; written
against torch_npu's documented signatures and never run.

- add_rms_norm -> torch_npu.npu_add_rms_norm(x1, x2, gamma, epsilon) -> (y, rstd, x): the sum is computed in
  float32 and y from it, i.e. the fp32_sum=True form; the fp32_sum=False form (sum rounded first) falls back to
  the reference on low-precision inputs.
- rms_norm -> torch_npu.npu_rms_norm(x, gamma, epsilon) -> (y, rstd).
- rms_norm_rope -> npu_rms_norm then torch_npu.npu_rotary_mul(x, cos, sin) (rotate-half form, full tables;
  half tables are duplicated to full width first).
- silu_and_mul -> torch_npu.npu_swiglu(x, dim=-1), which takes [gate | up] as one tensor x and splits it in halves
  along dim itself (its docs: "A and B are x split along dim"; meta: output size dim // 2). Where gate and up are
  the two halves of one buffer (vLLM's merged gate_up projection) x is that buffer, as a view: no copy. Other
  inputs of equal shape are concatenated first (one copy); inputs that differ in shape or dtype (broadcasting,
  promotion) run the reference.
"""

from __future__ import annotations

import torch

from . import norm as rms_norm_ops
from . import rope as rope_ops
from . import swiglu as swiglu_ops


def rms_norm_npu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    import torch_npu

    return torch_npu.npu_rms_norm(x, weight, epsilon=eps)[0]


def add_rms_norm_npu(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, fp32_sum: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch_npu

    if not fp32_sum and x.dtype != torch.float32:
        return rms_norm_ops.add_rms_norm_reference(x, residual, weight, eps, fp32_sum)
    normed, _, total = torch_npu.npu_add_rms_norm(x, residual, weight, eps)
    return normed, total


def rms_norm_rope_npu(
    x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> torch.Tensor:
    import torch_npu

    half = rope_ops._check(x, cos, sin)
    if cos.shape[-1] == half:
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    normed = torch_npu.npu_rms_norm(x, weight, epsilon=eps)[0]
    return torch_npu.npu_rotary_mul(normed, cos.expand_as(normed), sin.expand_as(normed))


def silu_and_mul_npu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    import torch_npu

    merged = swiglu_ops.merged_gate_up(gate, up)
    if merged is None:
        if gate.shape != up.shape or gate.dtype != up.dtype:
            return swiglu_ops.silu_and_mul_reference(gate, up)
        merged = torch.cat((gate, up), dim=-1)
    return torch_npu.npu_swiglu(merged, dim=-1)


def register() -> None:
    """Register the torch_npu implementations for the "npu" device (needs torch_npu imported)."""
    rms_norm_ops.rms_norm.register_kernel("npu")(rms_norm_npu)
    rms_norm_ops.add_rms_norm.register_kernel("npu")(add_rms_norm_npu)
    rope_ops.rms_norm_rope.register_kernel("npu")(rms_norm_rope_npu)
    swiglu_ops.silu_and_mul.register_kernel("npu")(silu_and_mul_npu)
