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
| `decode_linear(x, weight, residual)` | F.linear (+ residual), M <= 32 tokens | Triton GEMV | npu_fused_matmul (add) |
| `decode_gate_up_silu(x, weight)` | silu_and_mul(F.linear(x, [Wg; Wu])) | Triton GEMV | F.linear + npu_swiglu |
| `rms_norm_linear(x, r, nw, eps, w, ...)` | (F.linear(RMSNorm(x + r)), x + r) | Triton | norm, F.linear |
| `rms_norm_qkv_rope(x, r, nw, eps, w, qn, kn, ...)` | norm, qkv, q/k norm, RoPE | Triton | norms, F.linear, rotary |

"rotary": npu_apply_rotary_pos_emb (or npu_rotary_mul), see kernels/decode_npu.py. The decode ops are
described in `kernels/decode_ops.py` (`rms_norm_qkv_rope` in `kernels/decode_qkv_rope.py`); their block sizes in
`kernels/decode_tuning.py`.
"""

from __future__ import annotations

import importlib.util
import logging

# This folder is also importable as a top-level `kernels` wherever a checkout's root is on sys.path (pytest puts it
# there), and transformers imports `kernels` to probe for the Hugging Face package of that name. Imported so, it
# registers nothing: a second registration of the ascend_graph ops replaces the operator objects that graphs and
# passes already hold (seen: the decode_gemv pass matched nothing after transformers' probe).
AS_INSTALLED = __name__ == "ascend_graph.kernels"
if AS_INSTALLED:
    from .decode_ops import decode_gate_up_silu, decode_linear, rms_norm_linear
    from .decode_qkv_rope import rms_norm_qkv_rope
    from .norm import add_rms_norm, rms_norm
    from .rope import rms_norm_rope
    from .swiglu import silu_and_mul

logger = logging.getLogger(__name__)

__all__ = [
    "add_rms_norm",
    "decode_gate_up_silu",
    "decode_linear",
    "rms_norm",
    "rms_norm_linear",
    "rms_norm_qkv_rope",
    "rms_norm_rope",
    "silu_and_mul",
    "DEVICE_KERNELS",
]

# Which device kernels were registered in this process, e.g. {"cuda": "triton"}.
DEVICE_KERNELS: dict[str, str] = {}


def _register_device_kernels() -> None:
    if importlib.util.find_spec("triton") is not None:
        try:
            from . import decode_qkv_rope_triton, decode_triton, triton_kernels
        except ImportError as error:  # a triton that does not import beside this torch: reference on CUDA
            logger.warning("ascend_graph.kernels: Triton kernels not registered (%s); CUDA uses the reference", error)
        else:
            triton_kernels.register()
            decode_triton.register()
            decode_qkv_rope_triton.register()
            DEVICE_KERNELS["cuda"] = "triton"
    if importlib.util.find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401  (registers the "npu" device type)

        from . import decode_npu, npu

        npu.register()
        decode_npu.register()
        DEVICE_KERNELS["npu"] = "torch_npu (unverified)"


if AS_INSTALLED:
    _register_device_kernels()
