"""`rms_norm_qkv_rope`'s Triton kernel on CUDA (GPU-marked): equal to the reference at the Qwen3-0.6B / 8B qkv sites
for 1 to 32 tokens, the streamed norm as accurate as the reference against float64, and one kernel per call. The
checks are test_decode_qkv_rope.py's, which runs them on the CPU through the interpreter."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.test_decode_linear import assert_close
from tests.kernels.test_decode_linear_cuda import GPU, cuda_kernels, float32_cublas_sums
from tests.kernels.test_decode_qkv_rope import check_qkv_rope_kernel, qkv_rope_cases

# (hidden, head_dim, q heads, kv heads) of the qkv site
QWEN3_QKV = {"qwen3-0.6b": (1024, 128, 16, 8), "qwen3-8b": (4096, 128, 32, 8)}


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("shape", sorted(QWEN3_QKV))
@pytest.mark.parametrize("tokens", [1, 2, 4, 8, 16, 32])
def test_qkv_rope_kernel_equals_the_reference_on_cuda(shape: str, tokens: int) -> None:
    from ascend_graph.kernels import DEVICE_KERNELS

    assert DEVICE_KERNELS.get("cuda") == "triton", DEVICE_KERNELS
    torch.manual_seed(tokens)
    with float32_cublas_sums():
        for case in qkv_rope_cases("cuda", torch.bfloat16, *QWEN3_QKV[shape], tokens):
            got, expected = case.op(*case.args), case.reference(*case.args)
            assert_close(got, expected, torch.bfloat16, f"{shape} {case.name}", case.streamed)


@pytest.mark.gpu
@GPU
def test_qkv_rope_kernel_in_every_dtype_and_as_accurate_as_the_reference_on_cuda() -> None:
    torch.manual_seed(0)
    with float32_cublas_sums():
        check_qkv_rope_kernel("cuda", torch.ops.ascend_graph.rms_norm_qkv_rope, list(QWEN3_QKV.values()), [1, 3, 8, 32])


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("shape", sorted(QWEN3_QKV))
def test_qkv_rope_is_one_triton_kernel_on_cuda(shape: str) -> None:
    torch.manual_seed(0)
    for case in qkv_rope_cases("cuda", torch.bfloat16, *QWEN3_QKV[shape], 4):
        kernels = cuda_kernels(lambda case=case: case.op(*case.args))
        assert len(kernels) == 1 and "rms_norm_qkv_rope_kernel" in kernels[0], (case.name, kernels)
