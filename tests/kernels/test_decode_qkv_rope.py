"""`ascend_graph::rms_norm_qkv_rope` (kernels/decode_qkv_rope.py): schema and fake implementation, the errors bad
input gets, the reference against the unfused maths written out here, and the Triton kernel's maths on the CPU
through Triton's interpreter (the same checks run on CUDA in test_decode_qkv_rope_cuda.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ascend_graph.kernels import decode_qkv_rope

from tests.kernels.test_decode_linear import Case, assert_close, run_interpreted

EPS = 1e-6


def qkv_rope_cases(
    device: str, dtype: torch.dtype, hidden: int, head_dim: int, q_heads: int, kv_heads: int, tokens: int
) -> list[Case]:
    """Every variant of the op at one shape (residual or not, fp32 sum, exact or streamed norm), fresh values;
    cos / sin of real angles, as rows of a rotary cache are."""

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, device=device) * scale).to(dtype)

    x, residual = randn(tokens, hidden), randn(tokens, hidden)
    weight = randn((q_heads + 2 * kv_heads) * head_dim, hidden, scale=hidden**-0.5)
    norm_weight, q_norm, k_norm = (1 + 0.1 * randn(size) for size in (hidden, head_dim, head_dim))
    angles = torch.rand(tokens, head_dim // 2, device=device) * 2 * math.pi
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    op, reference = torch.ops.ascend_graph.rms_norm_qkv_rope, decode_qkv_rope.rms_norm_qkv_rope_reference
    cases = []
    for has_residual, fp32_sum in ((False, False), (True, False), (True, True)):
        for exact in (False, True):
            args = (x, residual if has_residual else None, norm_weight, EPS, weight, q_norm, k_norm, EPS, cos, sin,
                    q_heads, kv_heads, fp32_sum, exact)  # fmt: skip
            name = f"qkv_rope(residual={has_residual}, fp32_sum={fp32_sum}, exact={exact}, tokens={tokens})"
            cases.append(Case(name, op, reference, args, streamed=not exact and dtype != torch.float16))
    return cases


def unfused(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, eps: float,
            weight: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor, head_eps: float, cos: torch.Tensor,
            sin: torch.Tensor, q_heads: int, kv_heads: int, *_: Any) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The maths in float32, written out: norm, linear, then each head's norm and rotation by its two halves."""
    total = x if residual is None else x + residual
    rms = total.pow(2).mean(-1, keepdim=True).add(eps).rsqrt()
    qkv = F.linear(total * rms * norm_weight, weight)
    head_dim, half = q_norm.shape[0], q_norm.shape[0] // 2
    heads = list(qkv.view(x.shape[0], -1, head_dim).unbind(1))
    for index in range(q_heads + kv_heads):
        head = heads[index]
        head = head * head.pow(2).mean(-1, keepdim=True).add(head_eps).rsqrt()
        head = head * (q_norm if index < q_heads else k_norm)
        a, b = head[:, :half], head[:, half:]
        heads[index] = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return torch.stack(heads, 1).flatten(1), total


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qkv_rope_schema_and_fake_implementation(dtype: torch.dtype) -> None:
    for case in qkv_rope_cases("cpu", dtype, hidden=48, head_dim=32, q_heads=4, kv_heads=2, tokens=3):
        torch.library.opcheck(case.op, case.args, test_utils=("test_schema", "test_faketensor"))
        assert_close(case.op(*case.args), case.reference(*case.args), dtype, case.name)


def test_qkv_rope_reference_computes_the_unfused_maths() -> None:
    torch.manual_seed(0)
    for case in qkv_rope_cases("cpu", torch.float32, hidden=40, head_dim=16, q_heads=4, kv_heads=1, tokens=5):
        got, expected = case.op(*case.args), unfused(*case.args)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=lambda m, name=case.name: f"{name}: {m}")
        q_size = 4 * 16  # v is the linear's output as it was: no norm, no rotation
        torch.testing.assert_close(got[0][:, -16:], F.linear(*_normed_input(case.args))[:, q_size + 16 :])


def _normed_input(args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    x, residual, norm_weight, eps, weight = args[:5]
    total = x if residual is None else x + residual
    return total * total.pow(2).mean(-1, keepdim=True).add(eps).rsqrt() * norm_weight, weight


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weight": torch.randn(90, 8)}, r"weight \[\(Hq \+ 2 Hkv\) \* D, K\]"),
        ({"k_norm": torch.ones(6)}, "q_norm and k_norm"),
        ({"cos": torch.ones(2, 8)}, r"cos and sin \[M, D / 2\]"),
        ({"x": torch.randn(2, 8, dtype=torch.bfloat16)}, "must share one dtype"),
        ({"q_norm": torch.ones(7), "k_norm": torch.ones(7)}, "D even"),
    ],
)
def test_qkv_rope_names_what_is_wrong(change: dict[str, torch.Tensor], message: str) -> None:
    # x [2, 8]; 2 q heads and 1 kv head of 8: weight [32, 8]; cos / sin [2, 4]
    args = {"x": torch.randn(2, 8), "residual": None, "norm_weight": torch.ones(8), "eps": EPS,
            "weight": torch.randn(32, 8), "q_norm": torch.ones(8), "k_norm": torch.ones(8), "head_eps": EPS,
            "cos": torch.ones(2, 4), "sin": torch.zeros(2, 4), "num_q_heads": 2, "num_kv_heads": 1}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        torch.ops.ascend_graph.rms_norm_qkv_rope(**(args | change))


def check_qkv_rope_kernel(device: str, launch: Any, shapes: list[tuple[int, int, int, int]], tokens: list[int]) -> int:
    """`launch` against the reference over every variant, dtype and token count; returns the cases checked. The
    exact path (and float16, never streamed) within the decode ops' tolerances; the streamed norm (bfloat16) within
    the streamed bound of test_decode_linear.py (measured under the interpreter: 0.67 of it at most over 72
    draws) and, over all cases, no less accurate against float64 than the bfloat16 reference (10% margin)."""
    checked, errors, references, norms = 0, 0.0, 0.0, 0.0
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for hidden, head_dim, q_heads, kv_heads in shapes:
            for count in tokens:
                for case in qkv_rope_cases(device, dtype, hidden, head_dim, q_heads, kv_heads, count):
                    got, expected = launch(*case.args), case.reference(*case.args)
                    assert_close(got, expected, dtype, case.name, case.streamed)
                    checked += 1
                    if case.streamed:
                        exact = unfused(*[a.double() if isinstance(a, torch.Tensor) else a for a in case.args])[0]
                        errors += (got[0].double() - exact).pow(2).sum().item()
                        references += (expected[0].double() - exact).pow(2).sum().item()
                        norms += exact.pow(2).sum().item()
    assert errors <= 1.1**2 * references, ((errors / norms) ** 0.5, (references / norms) ** 0.5)
    return checked


def test_qkv_rope_kernel_maths_under_the_interpreter() -> None:
    # K = 100: the K loop runs with a masked tail; head dims 32 and 64 (half 16, 32): 3 and 5 heads a call.
    check = """
from tests.kernels.test_decode_qkv_rope import check_qkv_rope_kernel
from ascend_graph.kernels import decode_qkv_rope_triton as kernel
torch.manual_seed(0)
print("checked", check_qkv_rope_kernel("cpu", kernel.rms_norm_qkv_rope_cuda, [(100, 32, 1, 1), (100, 64, 3, 1)],
                                       [1, 3, 8]))
"""
    assert "checked 108" in run_interpreted(check)


def test_qkv_rope_kernel_declines_what_it_does_not_take() -> None:
    """Head dims whose half is not a power of two >= 16, and more than 32 tokens, run the reference."""
    pytest.importorskip("triton")
    from ascend_graph.kernels import decode_qkv_rope_triton as kernel

    for head_dim, tokens in ((24, 2), (16, 2), (32, 33)):
        case = qkv_rope_cases("cpu", torch.float32, 16, head_dim, 1, 1, tokens)[0]
        x, residual, norm_weight, _, weight, q_norm, _, _, cos, sin = case.args[:10]
        assert not kernel.takes(x, residual, norm_weight, weight, q_norm, cos, sin), (head_dim, tokens)
        assert torch.equal(kernel.rms_norm_qkv_rope_cuda(*case.args)[0], case.reference(*case.args)[0])
    case = qkv_rope_cases("cpu", torch.float32, 16, 32, 1, 1, 32)[0]
    assert kernel.takes(*[case.args[i] for i in (0, 1, 2, 4, 5, 8, 9)])


@pytest.mark.slow
@pytest.mark.parametrize("tokens", [1, 8, 32])
@pytest.mark.parametrize("hidden", [1024, 4096])
def test_qkv_rope_kernel_compiles_for_hopper_without_spills(hidden: int, tokens: int) -> None:
    """The Qwen3-0.6B / 8B qkv sites (head_dim 128) with their default config, streamed and exact norm, compiled for
    sm_90 here (no GPU): no register spills, shared memory within a block's limit. (Seen when written, Triton 3.9:
    78-144 registers, 85-105 KB.) The same with the KV-cache store."""
    pytest.importorskip("triton")
    from ascend_graph.kernels.decode_qkv_rope_triton import qkv_rope_config
    from ascend_graph.kernels.decode_resources import qkv_rope_hopper_resources

    from tests.kernels.test_decode_linear import HOPPER_SHARED

    x = torch.empty(tokens, hidden, dtype=torch.bfloat16, device="meta")
    weight = torch.empty(4096 if hidden == 1024 else 6144, hidden, dtype=torch.bfloat16, device="meta")
    config = qkv_rope_config(x, weight, 64, residual=True)
    for stream in (True, False):
        for store in (False, True):
            flags = {"STREAM_NORM": stream, "HAS_RESIDUAL": True, "FP32_SUM": True, "IEEE": False, "STORE_KV": store}
            found = qkv_rope_hopper_resources(tokens, hidden, 64, flags, config)
            assert found.stack == 0 and found.registers < 255 and found.shared <= HOPPER_SHARED, (flags, found)
