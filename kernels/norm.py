"""`ascend_graph::rms_norm` and `ascend_graph::add_rms_norm`: RMSNorm, alone and after a residual add.

The default implementation is the reference: the same torch code, in the same order and with the same dtype casts,
as the unfused graphs the passes replace, so a fused graph on the CPU computes what the model wrote. CUDA (Triton)
and NPU (torch_npu) kernels are registered on top of it (`kernels/triton_kernels.py`, `kernels/npu.py`).

RMSNorm as Qwen3 / Llama write it (transformers, vLLM's forward_native, ascend_graph.models.qwen3):
    normed = (x.float() * rsqrt(mean(x.float()**2, -1) + eps)).to(x.dtype) * weight
With a residual, two forms exist, and `fp32_sum` says which one a call computes:
    fp32_sum=False (transformers, ascend_graph.models.qwen3): s = x + residual in the input dtype; normed = norm(s)
    fp32_sum=True  (vLLM's RMSNorm.forward_native):          s32 = x.float() + residual.float(); normed is computed
                                                               from s32; s = s32.to(x.dtype)
Both return (normed, s): s is the new residual stream.
"""

from __future__ import annotations

import torch


def _norm(x32: torch.Tensor, eps: float) -> torch.Tensor:
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _norm(x.float(), eps).to(x.dtype) * weight


def add_rms_norm_reference(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, fp32_sum: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if fp32_sum:
        total32 = x.float() + residual.float()
        return _norm(total32, eps).to(x.dtype) * weight, total32.to(x.dtype)
    total = x + residual
    return _norm(total.float(), eps).to(total.dtype) * weight, total


@torch.library.custom_op("ascend_graph::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of the last dimension: (x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype) * weight."""
    return rms_norm_reference(x, weight, eps)


@rms_norm.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype))


@torch.library.custom_op("ascend_graph::add_rms_norm", mutates_args=())
def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, fp32_sum: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual) * weight, x + residual); see the module docstring for `fp32_sum`."""
    return add_rms_norm_reference(x, residual, weight, eps, fp32_sum)


@add_rms_norm.register_fake
def _(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, fp32_sum: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    sum_dtype = x.dtype if fp32_sum else torch.promote_types(x.dtype, residual.dtype)
    shape = torch.broadcast_shapes(x.shape, residual.shape)
    normed = x.new_empty(shape, dtype=torch.promote_types(sum_dtype, weight.dtype))
    return normed, x.new_empty(shape, dtype=sum_dtype)
