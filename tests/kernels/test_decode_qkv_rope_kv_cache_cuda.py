"""The KV-cache store of `rms_norm_qkv_rope`'s Triton kernel on CUDA (GPU-marked; needs vLLM for CUDA, the GPU
lane): `ascend_graph::rms_norm_qkv_rope_kv_cache` with a real TritonAttentionImpl in vLLM's forward context leaves
the cache bitwise as vLLM's own TRITON_ATTN write (`do_kv_cache_update`, its reshape-and-cache kernel) of the same
k and v, qkv and total bitwise the kernel's without the store, at the Qwen3-0.6B / 8B qkv sites for 1 to 32
tokens, both of vLLM 0.26's cache layouts; and the op is one kernel. The checks are
tests/vllm_plugin/test_decode_kv_cache_store.py's, which runs them on the CPU through the interpreter against a
torch restatement of vLLM's write."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.kernels.test_decode_linear_cuda import GPU, cuda_kernels
from tests.kernels.test_decode_qkv_rope_cuda import QWEN3_QKV

pytestmark = [pytest.mark.gpu, pytest.mark.gpu_vllm, GPU]


@pytest.mark.parametrize("shape", sorted(QWEN3_QKV))
def test_the_fused_write_equals_vllms_triton_attn_write_on_cuda(shape: str) -> None:
    pytest.importorskip("vllm")
    from tests.vllm_plugin.test_decode_kv_cache_store import check_fused_write, triton_impl

    _, head_dim, heads, kv_heads = QWEN3_QKV[shape]

    def vllm_write(layer: Any, *args: torch.Tensor) -> None:  # an impl of its own: the op's refuses to write
        triton_impl(heads, head_dim, kv_heads).do_kv_cache_update(layer, *args)

    torch.manual_seed(0)
    dtypes = [torch.bfloat16, torch.float16, torch.float32]
    checked = check_fused_write("cuda", [QWEN3_QKV[shape]], dtypes, [1, 3, 8, 32], ["HND", "NHD"], vllm_write)
    assert checked == 3 * 4 * 2 * 2


@pytest.mark.parametrize("shape", sorted(QWEN3_QKV))
def test_the_fused_write_is_one_kernel_on_cuda(shape: str) -> None:
    """The qkv kernel alone: no reshape_and_cache kernel beside it."""
    pytest.importorskip("vllm")
    from vllm.utils.torch_utils import _encode_layer_name

    from tests.kernels.test_decode_qkv_rope import qkv_rope_cases
    from tests.vllm_plugin.test_decode_kv_cache_store import (
        LAYER,
        attention_context,
        paged_cache,
        step_slots,
        triton_impl,
    )

    _, head_dim, heads, kv_heads = QWEN3_QKV[shape]
    torch.manual_seed(0)
    case = qkv_rope_cases("cuda", torch.bfloat16, *QWEN3_QKV[shape], 4)[0]
    cache = paged_cache("NHD", torch.bfloat16, "cuda", kv_heads, head_dim)
    with attention_context(triton_impl(heads, head_dim, kv_heads), cache, step_slots(4, "cuda", 0)):
        call = lambda: torch.ops.ascend_graph.rms_norm_qkv_rope_kv_cache(*case.args, _encode_layer_name(LAYER))  # noqa: E731
        kernels = cuda_kernels(call)
    assert len(kernels) == 1 and "rms_norm_qkv_rope_kernel" in kernels[0], kernels
    assert cache.any()
