"""The decode linear ops (kernels/decode_ops.py): schema and fake implementations, the errors bad input gets, the
tuning table's defaults, the Triton kernel's maths on the CPU through Triton's interpreter, and (GPU-marked) the
Triton kernel on CUDA against the reference at the Qwen3-0.6B / 8B shapes for 1, 2, 4 and 8 tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from ascend_graph.kernels import decode_ops
from ascend_graph.kernels.decode_tuning import HOPPER_SMS, DecodeConfig, autotune_candidates, default_config

# float32: summation order only. bfloat16: the GEMV's output is rounded once (as cuBLAS rounds it); a different
# summation order can move it by one unit in the last place (2^-8 relative), and SiLU-mul or the residual add after
# it by one more: two allowed, plus an absolute term for outputs near zero (the weights are scaled so that
# outputs are of order 1, as in a model).
TOLERANCES = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.bfloat16: {"atol": 2e-2, "rtol": 1.6e-2},
    torch.float16: {"atol": 2.5e-3, "rtol": 2e-3},  # the same two units in the last place, 2^-11 relative
}


def decode_cases(device: str, dtype: torch.dtype, hidden: int, out: int, inter: int, tokens: int) -> list:
    """(name, op, reference, args) for every op and variant at one shape, fresh random values."""

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, device=device) * scale).to(dtype)

    x, residual = randn(tokens, hidden), randn(tokens, hidden)
    weight, gate_up = randn(out, hidden, scale=hidden**-0.5), randn(2 * inter, hidden, scale=hidden**-0.5)
    norm_weight = (1 + 0.1 * torch.randn(hidden, device=device)).to(dtype)
    down = randn(hidden, inter, scale=inter**-0.5)
    ops = torch.ops.ascend_graph
    cases: list[tuple[str, Any, Any, tuple]] = [
        ("linear", ops.decode_linear, decode_ops.decode_linear_reference, (x, weight, None)),
        ("linear+residual", ops.decode_linear, decode_ops.decode_linear_reference,
         (randn(tokens, inter), down, randn(tokens, hidden))),
        ("gate_up_silu", ops.decode_gate_up_silu, decode_ops.decode_gate_up_silu_reference, (x, gate_up)),
    ]  # fmt: skip
    for has_residual, fp32_sum, silu_mul in [(False, False, False), (True, False, False), (True, True, False),
                                             (False, False, True), (True, True, True)]:  # fmt: skip
        matrix = gate_up if silu_mul else weight
        args = (x, residual if has_residual else None, norm_weight, 1e-6, matrix, fp32_sum, silu_mul)
        name = f"rms_norm_linear(residual={has_residual}, fp32_sum={fp32_sum}, silu_mul={silu_mul})"
        cases.append((name, ops.rms_norm_linear, decode_ops.rms_norm_linear_reference, args))
    return cases


def assert_close(got: Any, expected: Any, dtype: torch.dtype, name: str) -> None:
    got = got if isinstance(got, tuple | list) else (got,)
    expected = expected if isinstance(expected, tuple | list) else (expected,)
    for value, reference in zip(got, expected, strict=True):
        assert value.dtype == reference.dtype and value.shape == reference.shape, name
        torch.testing.assert_close(value, reference, **TOLERANCES[dtype], msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_ops_schema_and_fake_implementations(dtype: torch.dtype) -> None:
    for name, op, reference, args in decode_cases("cpu", dtype, hidden=64, out=48, inter=40, tokens=3):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
        assert_close(op(*args), reference(*args), dtype, name)  # the CPU implementation is the reference


def test_decode_ops_compute_the_unfused_graph() -> None:
    x, weight, residual = torch.randn(2, 32), torch.randn(64, 32), torch.randn(2, 32)
    norm_weight = torch.rand(32) + 0.5
    gate, up = torch.nn.functional.linear(x, weight).chunk(2, dim=-1)
    torch.testing.assert_close(
        torch.ops.ascend_graph.decode_gate_up_silu(x, weight), torch.nn.functional.silu(gate) * up
    )
    total = x + residual
    normed = total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + 1e-6) * norm_weight
    out, new_residual = torch.ops.ascend_graph.rms_norm_linear(x, residual, norm_weight, 1e-6, weight, False, False)
    torch.testing.assert_close(out, torch.nn.functional.linear(normed, weight))
    torch.testing.assert_close(new_residual, total)
    _, copied = torch.ops.ascend_graph.rms_norm_linear(x, None, norm_weight, 1e-6, weight, False, False)
    assert torch.equal(copied, x) and copied.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: torch.ops.ascend_graph.decode_linear(torch.randn(2, 8), torch.randn(4, 6)), "K = x.shape"),
        (
            lambda: torch.ops.ascend_graph.decode_linear(torch.randn(2, 8), torch.randn(4, 8, dtype=torch.bfloat16)),
            "must share one dtype",
        ),
        (lambda: torch.ops.ascend_graph.decode_gate_up_silu(torch.randn(2, 8), torch.randn(5, 8)), "even row count"),
        (
            lambda: torch.ops.ascend_graph.rms_norm_linear(
                torch.randn(2, 8), None, torch.ones(7), 1e-6, torch.randn(4, 8), False, False
            ),
            r"norm_weight must be \[8\]",
        ),
    ],
)
def test_decode_ops_name_what_is_wrong(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_tuning_defaults_fill_hopper_and_refuse_bad_blocks() -> None:
    lm_head, o_proj = default_config(151936, 1024), default_config(1024, 2048)
    assert lm_head.block_n == 64 and -(-151936 // 64) >= 2 * HOPPER_SMS
    assert o_proj.block_n == 16  # as many programs as a 1024-row weight allows
    assert default_config(4096, 12288).block_k == 256 and default_config(8, 40).block_k == 32
    assert autotune_candidates(4096, 1024)[0] == default_config(4096, 1024)
    with pytest.raises(ValueError, match="block_n must be a power of two"):
        DecodeConfig(block_n=24, block_k=64)


def test_a_kernel_that_cannot_be_built_runs_the_reference(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    triton_errors = pytest.importorskip("triton.runtime.errors")
    from ascend_graph.kernels import decode_triton

    def too_big(*args: Any, **kwargs: Any) -> None:
        raise triton_errors.OutOfResources(300000, 232448, "shared memory")

    monkeypatch.setattr(decode_triton, "launch", too_big)
    x, weight, residual = torch.randn(2, 32), torch.randn(48, 32), torch.randn(2, 48)
    expected = decode_ops.decode_linear_reference(x, weight, residual)
    assert torch.equal(decode_triton.decode_linear_cuda(x, weight, residual), expected)
    out, total = decode_triton.rms_norm_linear_cuda(x, None, torch.ones(32), 1e-6, weight, False, True)
    assert out.shape == (2, 24) and torch.equal(total, x)
    assert "decode kernel not built, the reference runs instead" in caplog.text and "OutOfResources" in caplog.text


INTERPRETER_CHECK = """
import numpy as np
import torch
import triton.language as tl
from triton.runtime import interpreter

# Triton's interpreter multiplies bfloat16 dot operands as their raw uint16 bits (numpy has no bfloat16): widen
# them to float32 first, which is what the tensor cores compute (exact products, float32 sums).
_dot = interpreter.InterpreterBuilder.create_dot
def _widening_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
    widen = lambda h: interpreter.TensorHandle(
        interpreter._convert_float(h.data, h.dtype.scalar, tl.float32, None).view(np.float32).reshape(h.data.shape),
        tl.float32) if h.dtype.scalar == tl.bfloat16 else h
    return _dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)
interpreter.InterpreterBuilder.create_dot = _widening_dot

# It also rounds float32 to bfloat16 by truncation, the GPU to nearest even: round to nearest even here too, or
# a chain of roundings (norm, weight, GEMV, silu, product) drifts by several units in the last place.
_cast = interpreter.InterpreterBuilder.cast_impl
def _nearest_cast(self, src, dst_type):
    if src.dtype.scalar != tl.float32 or dst_type.scalar != tl.bfloat16:
        return _cast(self, src, dst_type)
    bits = np.asarray(src.data, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return interpreter.TensorHandle(rounded, tl.bfloat16)
interpreter.InterpreterBuilder.cast_impl = _nearest_cast

from tests.kernels.test_decode_linear import assert_close, decode_cases
from ascend_graph.kernels import decode_triton as dt
from bench import decode_kernels as bench

# The benchmark compares like with like: each site's fused Triton variant computes what its unfused one does.
bench.DEVICE, bench.ROTATION_BYTES = "cpu", 1
for site in [bench.Site("m", "qkv", 96, 64), bench.Site("m", "o_proj", 64, 80), bench.Site("m", "gate_up", 96, 64),
             bench.Site("m", "lm_head", 80, 64)]:
    weights = bench.make_weights(site)
    calls = bench.variant_calls(site, bench.make_inputs(site, 3, weights), bench.config_for(site.out, site.k))
    fused, unfused = ("triton", "cublas") if site.kind == "lm_head" else ("triton_fused", "unfused")
    got, expected = calls[fused](weights[0])[0], calls[unfused](weights[0])
    assert_close(got, expected[0] if isinstance(expected, tuple) else expected, torch.bfloat16, site.kind)

launchers = {"decode_linear": dt.decode_linear_cuda, "decode_gate_up_silu": dt.decode_gate_up_silu_cuda,
             "rms_norm_linear": dt.rms_norm_linear_cuda}
torch.manual_seed(0)
checked = 0
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    for tokens in (1, 3, 8):
        # K = 100: the K loop runs twice (block_k 64) with a masked tail; N = 80: five programs of 16 rows.
        for name, op, reference, args in decode_cases("cpu", dtype, hidden=100, out=80, inter=40, tokens=tokens):
            launcher = launchers[op._qualified_op_name.split("::")[1]]
            assert_close(launcher(*args), reference(*args), dtype, name)
            checked += 1
print("checked", checked)
"""


def test_decode_kernel_maths_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", INTERPRETER_CHECK], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checked 72" in done.stdout


# (hidden, q size, qkv out, intermediate) of the decode layer sites; the lm_head's vocabulary.
QWEN3_SITES = {"qwen3-0.6b": (1024, 2048, 4096, 3072), "qwen3-8b": (4096, 4096, 6144, 12288)}
VOCAB = 151936


def model_cases(shape: str, tokens: int) -> list:
    """Every op at the sites it serves in one model, bfloat16: qkv, o_proj, gate_up, down and the lm_head."""
    hidden, q_size, qkv, inter = QWEN3_SITES[shape]
    cases = decode_cases("cuda", torch.bfloat16, hidden, out=qkv, inter=inter, tokens=tokens)
    attn = torch.randn(tokens, q_size, device="cuda", dtype=torch.bfloat16)
    o_proj = (torch.randn(hidden, q_size, device="cuda") * q_size**-0.5).to(torch.bfloat16)
    residual = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    lm_head = (torch.randn(VOCAB, hidden, device="cuda") * hidden**-0.5).to(torch.bfloat16)
    hidden_states = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    linear = torch.ops.ascend_graph.decode_linear
    cases.append(("o_proj+residual", linear, decode_ops.decode_linear_reference, (attn, o_proj, residual)))
    cases.append(("lm_head", linear, decode_ops.decode_linear_reference, (hidden_states, lm_head, None)))
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
@pytest.mark.parametrize("tokens", [1, 2, 4, 8])
def test_decode_kernels_equal_the_reference_on_cuda(shape: str, tokens: int) -> None:
    from ascend_graph.kernels import DEVICE_KERNELS

    assert DEVICE_KERNELS.get("cuda") == "triton", DEVICE_KERNELS
    torch.manual_seed(tokens)
    # The reference's cuBLAS may otherwise sum split-K partials in bfloat16 (torch's default allows it): compare
    # with its float32 sums, which is what the Triton kernel computes.
    matmul = torch.backends.cuda.matmul
    allowed, matmul.allow_bf16_reduced_precision_reduction = matmul.allow_bf16_reduced_precision_reduction, False
    try:
        for name, op, reference, args in model_cases(shape, tokens):
            assert_close(op(*args), reference(*args), torch.bfloat16, f"{shape} x{tokens} {name}")
    finally:
        matmul.allow_bf16_reduced_precision_reduction = allowed


@pytest.mark.gpu
@GPU
def test_each_decode_op_is_one_triton_kernel_on_cuda() -> None:
    torch.manual_seed(0)
    for name, op, _, args in model_cases("qwen3-0.6b", 4):
        kernels = cuda_kernels(lambda op=op, args=args: op(*args))
        assert len(kernels) == 1 and "_decode_linear_kernel" in kernels[0], (name, kernels)
