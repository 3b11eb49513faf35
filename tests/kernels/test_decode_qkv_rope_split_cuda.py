"""The split-K variant of `rms_norm_qkv_rope`'s kernel (kernels/decode_qkv_rope_split.py) on CUDA (GPU-marked), where
its programs run at once and the ticket's memory ordering is exercised (the interpreter runs them one by one): equal
to the reference at the Qwen3-0.6B / 8B qkv sites, call after call, the workspace zero after each; and in a CUDA
graph (workspace made by the eager call before capture) replayed three times, each replay within the same bound.
The checks are test_decode_qkv_rope_split.py's, which runs them on the CPU through the interpreter."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.test_decode_linear import assert_close
from tests.kernels.test_decode_linear_cuda import GPU, float32_cublas_sums
from tests.kernels.test_decode_qkv_rope import qkv_rope_cases
from tests.kernels.test_decode_qkv_rope_cuda import QWEN3_QKV

pytestmark = [pytest.mark.gpu, GPU]


def _clear() -> bool:
    from ascend_graph.kernels.decode_qkv_rope_split import WORKSPACES

    return all(not w.sums.any() and not w.tickets.any() for w in WORKSPACES._kept.values())


@pytest.mark.parametrize("shape", sorted(QWEN3_QKV))
@pytest.mark.parametrize("tokens", [1, 8, 32])
def test_split_kernel_equals_the_reference_call_after_call_on_cuda(shape: str, tokens: int) -> None:
    from ascend_graph.kernels.decode_qkv_rope_split import rms_norm_qkv_rope_split

    torch.manual_seed(tokens)
    with float32_cublas_sums():
        for case in qkv_rope_cases("cuda", torch.bfloat16, *QWEN3_QKV[shape], tokens):
            expected = case.reference(*case.args)
            for _ in range(10):
                assert_close(rms_norm_qkv_rope_split(*case.args), expected, torch.bfloat16, case.name, case.streamed)
                assert _clear(), case.name


@pytest.mark.parametrize("shape", sorted(QWEN3_QKV))
def test_split_kernel_replays_in_a_cuda_graph(shape: str) -> None:
    from ascend_graph.kernels.decode_qkv_rope_split import rms_norm_qkv_rope_split

    torch.manual_seed(0)
    case = qkv_rope_cases("cuda", torch.bfloat16, *QWEN3_QKV[shape], 4)[2]  # residual, streamed norm
    with float32_cublas_sums():
        expected = case.reference(*case.args)
    eager = rms_norm_qkv_rope_split(*case.args)  # also makes the workspace before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = rms_norm_qkv_rope_split(*case.args)
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        assert_close(captured, expected, torch.bfloat16, case.name, case.streamed)
        assert_close(captured, eager, torch.bfloat16, case.name, case.streamed)
        assert _clear()


def test_the_bench_compares_the_attention_front_like_with_like_on_cuda() -> None:
    from tests.kernels.test_decode_qkv_rope_split import check_qkv_rope_bench_variants

    torch.manual_seed(0)
    assert check_qkv_rope_bench_variants("cuda") == 3
