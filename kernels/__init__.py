"""Fused ops of ascend_graph, installed as `ascend_graph.kernels`.

Each op is a `torch.library` custom op in the `ascend_graph` namespace with a fake (meta) implementation for
tracing and a reference implementation in plain torch (the default, used on the CPU and wherever no device kernel
is registered). Importing this package registers the device kernels that can load here: Triton for CUDA (where
triton imports), torch_npu's fused ops for the NPU (where torch_npu imports; UNVERIFIED).

| op (`ascend_graph::`) | computes | CUDA | NPU (unverified) |
|---|---|---|---|
| `rms_norm(x, weight, eps)` | RMSNorm | Triton | npu_rms_norm |
| `add_rms_norm(x, residual, weight, eps, fp32_sum)` | (RMSNorm(x + r), x + r) | Triton | npu_add_rms_norm |
| `rms_norm_rope(x, weight, cos, sin, eps)` | RoPE(RMSNorm(x)) per head | Triton | npu_rms_norm + npu_rotary_mul |
| `silu_and_mul(gate, up)` | silu(gate) * up | Triton | npu_swiglu |
"""

from __future__ import annotations

import importlib.util
import logging

from .norm import add_rms_norm, rms_norm
from .rope import rms_norm_rope
from .swiglu import silu_and_mul

logger = logging.getLogger(__name__)

__all__ = ["add_rms_norm", "rms_norm", "rms_norm_rope", "silu_and_mul", "DEVICE_KERNELS"]

# Which device kernels were registered in this process, e.g. {"cuda": "triton"}.
DEVICE_KERNELS: dict[str, str] = {}


def _register_device_kernels() -> None:
    if importlib.util.find_spec("triton") is not None:
        try:
            from . import triton_kernels
        except ImportError as error:  # a triton that does not import beside this torch: reference on CUDA
            logger.warning("ascend_graph.kernels: Triton kernels not registered (%s); CUDA uses the reference", error)
        else:
            triton_kernels.register()
            DEVICE_KERNELS["cuda"] = "triton"
    if importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401  (registers the "npu" device type)

        from . import npu

        npu.register()
        DEVICE_KERNELS["npu"] = "torch_npu (unverified)"


_register_device_kernels()
