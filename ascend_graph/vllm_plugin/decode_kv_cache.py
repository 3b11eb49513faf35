"""`ascend_graph::rms_norm_qkv_rope_kv_cache`: `rms_norm_qkv_rope` (kernels/decode_qkv_rope.py) and the KV-cache
write of its k and v heads, what stage 3 of the `decode_gemv` pass (passes/decode_kv_cache.py) places where a
layer's `rms_norm_qkv_rope` feeds `vllm::unified_kv_cache_update`.

    qkv, total = rms_norm_qkv_rope(x, residual, ..., num_q_heads, num_kv_heads, fp32_sum, exact_rounding)
    k, v       = qkv's k and v heads as [M, Hkv, D] views (rows at the qkv row's stride)
    dep        = vllm::unified_kv_cache_update(k, v, layer_name)
    returns      (qkv, total, dep)

`dep` is vLLM's dummy (an empty tensor) that `unified_attention_with_output` takes as `kv_cache_dummy_dep`: the
data dependency that keeps the write in front of the attention that reads the cache. Like vLLM's op this one
declares no mutated argument: the cache it writes is not an argument but looked up at run time, by layer name,
in vLLM's forward context with vLLM's own `get_attention_context` (the layer, its `kv_cache`, the step's
`slot_mapping`; no write where the slot mapping is None, as in vLLM's profile run).

Two paths, chosen per call:
- Fused (the point of the stage): the qkv kernel itself stores the k and v rows into the cache
  (`rms_norm_qkv_rope_kv_store`, kernels/decode_qkv_rope_triton.py): one kernel, vLLM's reshape-and-cache kernel
  gone. Taken only where the layer's impl is exactly TRITON_ATTN's TritonAttentionImpl (its cache layout,
  [blocks, Hkv, block_size, 2 D] through its strides), kv_cache_dtype "auto" (the write is a plain copy: no fp8
  scales, no per-token-head quantisation), decoder attention, a slot mapping this step, and the kernel takes the
  call (M <= 32 tokens, the cache and slot mapping of the activations' dtype and device, CUDA tensors or the CPU
  under Triton's interpreter): `fused_write_declines` here, `store_declines` / `takes` in the kernel module.
- Reference, everywhere else: `rms_norm_qkv_rope` and then vLLM's own `unified_kv_cache_update` on its k and v,
  which calls the backend's `do_kv_cache_update` (layout, fp8 scales, per-token-head quantisation: whatever the
  backend does). Each reason for it is logged once (none for a step without slot mapping: vLLM writes nothing
  there either).

The fused path reads the cache's and the slot mapping's addresses when it runs, so under graph capture they are
baked in, as they are for vLLM's own write: the cache is allocated once and Model Runner V2's slot mapping is one
persistent buffer. Verified under Triton's interpreter on the CPU (tests/vllm_plugin/test_decode_kv_cache_store.py);
the CUDA test against vLLM's real write (tests/kernels/test_decode_qkv_rope_kv_cache_cuda.py) has not run yet.

The layer name is vLLM's `LayerNameType`: a `LayerName` opaque object on torch >= 2.11 (dynamo lifts it to a
graph input, so the op's schema reads `PyObject`), a plain str before. Registered here, beside vLLM, and not in
kernels/ (which imports no vLLM); ascend_graph's compiler (compiler.py) imports it, so every process that
compiles a piece, or loads one from vLLM's compile cache, has the op.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from vllm.model_executor.layers.attention.attention import get_attention_context
from vllm.utils.torch_utils import LayerNameType, _resolve_layer_name
from vllm.v1.attention.backend import AttentionType

import ascend_graph.kernels  # noqa: F401 - registers ascend_graph::rms_norm_qkv_rope

logger = logging.getLogger(__name__)

OP = "rms_norm_qkv_rope_kv_cache"
AUTO = "auto"  # kv_cache_dtype "auto": the cache in the model's dtype, no fp8 scales, no per-token-head quantisation


@functools.lru_cache(maxsize=64)
def _decline_once(reason: str) -> None:
    logger.warning("ascend_graph %s: vLLM's own KV-cache write runs after the qkv op: %s", OP, reason)


@functools.cache
def _triton_attn_impl() -> type | None:
    """TRITON_ATTN's TritonAttentionImpl, or None where its module does not import (imported late: other lanes
    need not have it)."""
    try:
        from vllm.v1.attention.backends.triton_attn import TritonAttentionImpl
    except ImportError:
        return None
    return TritonAttentionImpl


@functools.cache
def _kernel() -> Any:
    """kernels/decode_qkv_rope_triton.py, or None where triton does not import beside this torch."""
    try:
        from ascend_graph.kernels import decode_qkv_rope_triton
    except ImportError:
        return None
    return decode_qkv_rope_triton


def fused_write_declines(layer: Any, slot_mapping: torch.Tensor | None) -> str | None:
    """Why the layer's cache write cannot be the qkv kernel's store, vLLM's side of it (the kernel's own
    conditions are `store_declines` and `takes` in kernels/decode_qkv_rope_triton.py), or None when it can: the
    layer's impl exactly TRITON_ATTN's (a subclass such as the diff-kv one lays its cache out otherwise), kv_cache_dtype
    "auto" (its write then is a plain copy: no scales; per-token-head modes are other dtypes), decoder attention
    (cross-attention writes the encoder's k and v), and a slot mapping this step ("" when there is none: vLLM
    writes nothing then either, nothing to log)."""
    if slot_mapping is None:
        return ""
    if _kernel() is None:
        return "ascend_graph's Triton kernels do not import here"
    impl, triton_impl = getattr(layer, "impl", None), _triton_attn_impl()
    if triton_impl is None or type(impl) is not triton_impl:
        return f"attention impl {type(impl).__name__}, not TRITON_ATTN's TritonAttentionImpl"
    if impl.kv_cache_dtype != AUTO:
        return f"kv_cache_dtype {impl.kv_cache_dtype!r}, not {AUTO!r}"
    if impl.attn_type != AttentionType.DECODER:
        return f"attention type {impl.attn_type}, not decoder"
    return None


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
    args = (x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, num_q_heads, num_kv_heads,
            fp32_sum, exact_rounding)  # fmt: skip
    _, layer, kv_cache, slot_mapping = get_attention_context(_resolve_layer_name(layer_name))
    reason = fused_write_declines(layer, slot_mapping)
    if reason is None:
        kernel = _kernel()  # not None: fused_write_declines checked
        done = kernel.rms_norm_qkv_rope_kv_store(*args, kernel.KVStore(kv_cache, slot_mapping))
        if done is not None:
            return *done, x.new_empty(0)  # vLLM's dummy: empty, of the key's (= the cache's) dtype and device
    elif reason:
        _decline_once(reason)
    qkv, total = torch.ops.ascend_graph.rms_norm_qkv_rope(*args)
    key, value = kv_heads(qkv, num_q_heads, num_kv_heads, q_norm.shape[0])
    return qkv, total, torch.ops.vllm.unified_kv_cache_update(key, value, layer_name)


@rms_norm_qkv_rope_kv_cache.register_fake
def _(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op's arguments, as above: the fused op's fake on all but the layer name, and vLLM's fake dummy."""
    qkv, total = torch.ops.ascend_graph.rms_norm_qkv_rope(*args[:-1])
    return qkv, total, args[0].new_empty(0)  # vLLM's fake dummy: empty, of the key's dtype and device
