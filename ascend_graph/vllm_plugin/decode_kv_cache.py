"""`ascend_graph::rms_norm_qkv_rope_kv_cache`: `rms_norm_qkv_rope` (kernels/decode_qkv_rope.py) followed by vLLM's
KV-cache write of its k and v heads, what stage 3 of the `decode_gemv` pass (passes/decode_kv_cache.py) places
where a layer's `rms_norm_qkv_rope` feeds `vllm::unified_kv_cache_update`.

    qkv, total = rms_norm_qkv_rope(x, residual, ..., num_q_heads, num_kv_heads, fp32_sum, exact_rounding)
    k, v       = qkv's k and v heads as [M, Hkv, D] views (rows at the qkv row's stride)
    dep        = vllm::unified_kv_cache_update(k, v, layer_name)
    returns      (qkv, total, dep)

`dep` is vLLM's dummy (an empty tensor) that `unified_attention_with_output` takes as `kv_cache_dummy_dep`: the
data dependency that keeps the write in front of the attention that reads the cache. Like vLLM's op this one
declares no mutated argument: the cache it writes is not an argument but looked up at run time, by layer name,
in vLLM's forward context (the layer's `kv_cache`, the step's `slot_mapping`; no write where the slot mapping is
None, as in vLLM's profile run), by vLLM's own op, which also calls the attention backend's own
`do_kv_cache_update` (layout, fp8 scales, per-token-head quantisation: whatever the backend does).

This is the reference: correct for every backend that writes the cache in its own op, and it removes no kernel
(the write is vLLM's `reshape_and_cache` kernel, as before). The kernel this stage exists for, the write as the
epilogue of the qkv GEMV for TRITON_ATTN's layout ([blocks, Hkv, block_size, 2 D] viewed as key / value caches,
kv_cache_dtype "auto", no per-token-head scales), is not built (passes/decode_kv_cache.py, docs/results.md).

The layer name is vLLM's `LayerNameType`: a `LayerName` opaque object on torch >= 2.11 (dynamo lifts it to a
graph input, so the op's schema reads `PyObject`), a plain str before. Registered here, beside vLLM, and not in
kernels/ (which imports no vLLM); ascend_graph's compiler (compiler.py) imports it, so every process that
compiles a piece, or loads one from vLLM's compile cache, has the op.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.model_executor.layers.attention.attention import unified_kv_cache_update  # noqa: F401 - registers its op
from vllm.utils.torch_utils import LayerNameType

import ascend_graph.kernels  # noqa: F401 - registers ascend_graph::rms_norm_qkv_rope

OP = "rms_norm_qkv_rope_kv_cache"


def kv_heads(qkv: torch.Tensor, num_q_heads: int, num_kv_heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """The k and v heads of a [M, (Hq + 2 Hkv) * D] qkv output as [M, Hkv, D] views, as vLLM's Attention hands
    them to `unified_kv_cache_update` (`key.view(-1, num_kv_heads, head_size)` of the split)."""
    start, size = num_q_heads * head_dim, num_kv_heads * head_dim
    key = qkv[:, start : start + size].view(-1, num_kv_heads, head_dim)
    value = qkv[:, start + size : start + 2 * size].view(-1, num_kv_heads, head_dim)
    return key, value


@torch.library.custom_op(f"ascend_graph::{OP}", mutates_args=())
def rms_norm_qkv_rope_kv_cache(
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
    fp32_sum: bool,
    exact_rounding: bool,
    layer_name: LayerNameType,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qkv, x + residual, vLLM's dummy dependency); see the module docstring."""
    qkv, total = torch.ops.ascend_graph.rms_norm_qkv_rope(
        x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, num_q_heads, num_kv_heads,
        fp32_sum, exact_rounding,
    )  # fmt: skip
    key, value = kv_heads(qkv, num_q_heads, num_kv_heads, q_norm.shape[0])
    return qkv, total, torch.ops.vllm.unified_kv_cache_update(key, value, layer_name)


@rms_norm_qkv_rope_kv_cache.register_fake
def _(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op's arguments, as above: the fused op's fake on all but the layer name, and vLLM's fake dummy."""
    qkv, total = torch.ops.ascend_graph.rms_norm_qkv_rope(*args[:-1])
    return qkv, total, args[0].new_empty(0)  # vLLM's fake dummy: empty, of the key's dtype and device
