"""The decode linear ops' Triton kernel on CUDA (GPU-marked): equal to the reference at the Qwen3-0.6B / 8B layer
sites for 1 to 32 tokens, the streamed norm (and its NORM_VARIANTS) as accurate as the reference and writing every
output element, and one kernel per op. The helpers are test_decode_linear.py's (and test_decode_norm_variants.py's),
whose checks run them on the CPU through the interpreter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from ascend_graph.kernels import decode_ops

from tests.kernels.test_decode_linear import (
    Case,
    assert_close,
    check_bench_variants,
    check_every_output_element_written,
    check_streamed_norm_accuracy,
    decode_cases,
)

# (hidden, q size, qkv out, intermediate) of the decode layer sites; the lm_head's vocabulary.
QWEN3_SITES = {"qwen3-0.6b": (1024, 2048, 4096, 3072), "qwen3-8b": (4096, 4096, 6144, 12288)}
VOCAB = 151936


def model_cases(shape: str, tokens: int) -> list[Case]:
    """Every op at the sites it serves in one model, bfloat16: qkv, o_proj, gate_up, down and the lm_head."""
    hidden, q_size, qkv, inter = QWEN3_SITES[shape]
    cases = decode_cases("cuda", torch.bfloat16, hidden, out=qkv, inter=inter, tokens=tokens)
    attn = torch.randn(tokens, q_size, device="cuda", dtype=torch.bfloat16)
    o_proj = (torch.randn(hidden, q_size, device="cuda") * q_size**-0.5).to(torch.bfloat16)
    residual = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    lm_head = (torch.randn(VOCAB, hidden, device="cuda") * hidden**-0.5).to(torch.bfloat16)
    hidden_states = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    linear = torch.ops.ascend_graph.decode_linear
    cases.append(Case("o_proj+residual", linear, decode_ops.decode_linear_reference, (attn, o_proj, residual)))
    cases.append(Case("lm_head", linear, decode_ops.decode_linear_reference, (hidden_states, lm_head, None)))
    return cases


def cuda_kernels(call: Any) -> list[str]:
    """Names of the CUDA kernels one call launches."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    return [event.name for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")


@pytest.mark.gpu
@GPU
@pytest.mark.parametrize("shape", sorted(QWEN3_SITES))
@pytest.mark.parametrize("tokens", [1, 2, 4, 8, 32])
def test_decode_kernels_equal_the_reference_on_cuda(shape: str, tokens: int) -> None:
    from ascend_graph.kernels import DEVICE_KERNELS

    assert DEVICE_KERNELS.get("cuda") == "triton", DEVICE_KERNELS
    torch.manual_seed(tokens)
    with float32_cublas_sums():
        for case in model_cases(shape, tokens):
            got, expected = case.op(*case.args), case.reference(*case.args)
            assert_close(got, expected, torch.bfloat16, f"{shape} x{tokens} {case.name}", case.streamed)


@contextlib.contextmanager
def float32_cublas_sums() -> Iterator[None]:
    """The reference's cuBLAS may otherwise sum split-K partials in bfloat16 (torch's default allows it): compare
    with its float32 sums, which is what the Triton kernel computes."""
    matmul = torch.backends.cuda.matmul
    allowed, matmul.allow_bf16_reduced_precision_reduction = matmul.allow_bf16_reduced_precision_reduction, False
    try:
        yield
    finally:
        matmul.allow_bf16_reduced_precision_reduction = allowed


@pytest.mark.gpu
@GPU
def test_streamed_norm_is_as_accurate_as_the_reference_on_cuda() -> None:
    with float32_cublas_sums():
        check_streamed_norm_accuracy(
            "cuda", torch.ops.ascend_graph.rms_norm_linear, [(1024, 4096, 3072), (4096, 6144, 12288)], draws=2
        )


@pytest.mark.gpu
@GPU
def test_streamed_norm_writes_every_output_element_on_cuda() -> None:
    check_every_output_element_written("cuda")
    check_bench_variants("cuda")


@pytest.mark.gpu
@GPU
def test_each_decode_op_is_one_triton_kernel_on_cuda() -> None:
    torch.manual_seed(0)
    for case in model_cases("qwen3-0.6b", 4):
        kernels = cuda_kernels(lambda case=case: case.op(*case.args))
        assert len(kernels) == 1 and "decode_linear_kernel" in kernels[0], (case.name, kernels)


@pytest.mark.gpu
@GPU
def test_norm_variants_compute_the_default_maths_on_cuda() -> None:
    from tests.kernels.test_decode_norm_variants import check_norm_variants

    with float32_cublas_sums():
        assert check_norm_variants("cuda") == 42
