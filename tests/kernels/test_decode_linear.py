"""The decode linear ops (kernels/decode_ops.py): schema and fake implementations, the errors bad input gets, the
tuning table's defaults and the kernel's resources compiled for sm_90, the Triton kernel's maths on the CPU through
Triton's interpreter (the same checks run on CUDA in test_decode_linear_cuda.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from ascend_graph.kernels import decode_ops
from ascend_graph.kernels.decode_tuning import (
    HOPPER_SMS,
    NORM_VARIANTS,
    SHARED_BUDGET,
    DecodeConfig,
    GemvShape,
    autotune_candidates,
    config_for,
    default_config,
    stage_bytes,
)

# float32: summation order only. bfloat16: the GEMV's output is rounded once (as cuBLAS rounds it); a different
# summation order can move it by one unit in the last place (2^-8 relative), and SiLU-mul or the residual add after
# it by one more: two allowed, plus an absolute term for outputs near zero (the weights are scaled so that
# outputs are of order 1, as in a model).
TOLERANCES = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.bfloat16: {"atol": 2e-2, "rtol": 1.6e-2},
    torch.float16: {"atol": 2.5e-3, "rtol": 2e-3},  # the same two units in the last place, 2^-11 relative
}
# rms_norm_linear's streamed norm (bfloat16) rounds (x + residual) * norm_weight where the reference rounds the
# normalised value and its product with norm_weight: different roundings of the GEMV's input, so against the
# bfloat16 reference one unit more is allowed (measured under the interpreter, 288 draws at K = 100 and 1024: at
# most 0.67 of this bound, 0.54 for the plain linear; the two-unit bound was exceeded once). Against the exact
# (float64) result it is as close as the reference: `test_streamed_norm_is_as_accurate_as_the_reference`.
STREAMED_BF16 = {"atol": 3e-2, "rtol": 2.4e-2}


def tolerance(dtype: torch.dtype, streamed: bool) -> dict[str, float]:
    return STREAMED_BF16 if streamed and dtype == torch.bfloat16 else TOLERANCES[dtype]


@dataclass(frozen=True)
class Case:
    """One call of a decode op and the reference it must equal (within `tolerance(dtype, streamed)`)."""

    name: str
    op: Any
    reference: Any
    args: tuple
    streamed: bool = False  # rms_norm_linear through the streamed norm (never in float16)


def decode_cases(device: str, dtype: torch.dtype, hidden: int, out: int, inter: int, tokens: int) -> list[Case]:
    """Every op and variant at one shape, fresh random values."""

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, device=device) * scale).to(dtype)

    x, residual = randn(tokens, hidden), randn(tokens, hidden)
    weight, gate_up = randn(out, hidden, scale=hidden**-0.5), randn(2 * inter, hidden, scale=hidden**-0.5)
    norm_weight = (1 + 0.1 * torch.randn(hidden, device=device)).to(dtype)
    down = randn(hidden, inter, scale=inter**-0.5)
    ops = torch.ops.ascend_graph
    cases = [
        Case("linear", ops.decode_linear, decode_ops.decode_linear_reference, (x, weight, None)),
        Case("linear+residual", ops.decode_linear, decode_ops.decode_linear_reference,
             (randn(tokens, inter), down, randn(tokens, hidden))),
        Case("gate_up_silu", ops.decode_gate_up_silu, decode_ops.decode_gate_up_silu_reference, (x, gate_up)),
    ]  # fmt: skip
    for has_residual, fp32_sum, silu_mul in [(False, False, False), (True, False, False), (True, True, False),
                                             (False, False, True), (True, True, True)]:  # fmt: skip
        for exact in (False, True):
            matrix = gate_up if silu_mul else weight
            args = (x, residual if has_residual else None, norm_weight, 1e-6, matrix, fp32_sum, silu_mul, exact)
            name = f"rms_norm_linear(residual={has_residual}, fp32_sum={fp32_sum}, silu_mul={silu_mul}, exact={exact})"
            streamed = not exact and dtype != torch.float16
            cases.append(Case(name, ops.rms_norm_linear, decode_ops.rms_norm_linear_reference, args, streamed))
    return cases


def assert_close(got: Any, expected: Any, dtype: torch.dtype, name: str, streamed: bool = False) -> None:
    got = got if isinstance(got, tuple | list) else (got,)
    expected = expected if isinstance(expected, tuple | list) else (expected,)
    for value, reference in zip(got, expected, strict=True):
        assert value.dtype == reference.dtype and value.shape == reference.shape, name
        torch.testing.assert_close(value, reference, **tolerance(dtype, streamed), msg=lambda m: f"{name}: {m}")


def exact_rms_norm_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    fp32_sum: bool,
    silu_mul: bool,
    *_: Any,
) -> torch.Tensor:
    """rms_norm_linear's first output in float64 from the same inputs: no rounding but the residual stream's (the
    op's own output, so part of what it computes when fp32_sum is off)."""
    if residual is None:
        total = x.double()
    else:
        total = x.double() + residual.double() if fp32_sum else (x + residual).double()
    normed = total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps) * norm_weight.double()
    out = torch.nn.functional.linear(normed, weight.double())
    if silu_mul:
        gate, up = out.chunk(2, dim=-1)
        out = torch.nn.functional.silu(gate) * up
    return out


def relative_errors(cases: list[Case], launch: Any) -> tuple[float, float, float]:
    """Over `cases` (rms_norm_linear): (largest per-case relative error of `launch`, its error over all cases,
    the reference's error over all cases), each against the float64 result, as ||got - exact|| / ||exact||."""
    worst, errors, references, norms = 0.0, 0.0, 0.0, 0.0
    for case in cases:
        exact = exact_rms_norm_linear(*case.args)
        got, expected = launch(*case.args)[0].double(), case.reference(*case.args)[0].double()
        worst = max(worst, ((got - exact).norm() / exact.norm()).item())
        errors += (got - exact).pow(2).sum().item()
        references += (expected - exact).pow(2).sum().item()
        norms += exact.pow(2).sum().item()
    return worst, (errors / norms) ** 0.5, (references / norms) ** 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_ops_schema_and_fake_implementations(dtype: torch.dtype) -> None:
    for case in decode_cases("cpu", dtype, hidden=64, out=48, inter=40, tokens=3):
        torch.library.opcheck(case.op, case.args, test_utils=("test_schema", "test_faketensor"))
        # the CPU implementation is the reference, exact_rounding or not
        assert_close(case.op(*case.args), case.reference(*case.args), dtype, case.name)


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
    lm_head, o_proj = default_config(GemvShape(151936, 1024)), default_config(GemvShape(1024, 2048))
    assert lm_head.block_n == 64 and -(-151936 // 64) >= 2 * HOPPER_SMS and lm_head.num_warps == 8
    assert o_proj.block_n == 16  # as many programs as a 1024-row weight allows
    assert default_config(GemvShape(4096, 12288)).block_k == 256 and default_config(GemvShape(8, 40)).block_k == 32
    with pytest.raises(ValueError, match="block_n must be a power of two"):
        DecodeConfig(block_n=24, block_k=64)
    with pytest.raises(ValueError, match="x_inputs must be 1 or 2"):
        GemvShape(64, 64, x_inputs=3)


def test_tuning_grows_the_weight_tile_with_the_tokens_it_streams_beside() -> None:
    # 8B qkv with its residual: at 32 tokens the x side (64 rows) would be four times a 16-row weight tile; the
    # tile doubles (to twice at most) while the grid keeps >= 7/8 of the SMs (6144 / 32 = 192 programs). The norm
    # prologue takes 128-wide K tiles and 8 warps (registers: NORM_BLOCK_K).
    few, many = GemvShape(6144, 4096, 1, x_inputs=2, norm=True), GemvShape(6144, 4096, 32, x_inputs=2, norm=True)
    assert default_config(few) == DecodeConfig(16, 128, 8, 3)
    assert default_config(many).block_n == 32 and default_config(many).block_k == 128
    # A plain GEMV at 32 tokens (x twice the tile) keeps the tile f534d05 measured winning: the 8B o_proj.
    assert default_config(GemvShape(4096, 4096, 32)).block_n == 16
    # gate-up reads two rows per output column: its tile counts both halves for the warps and the stages.
    gate_up = GemvShape(12288, 4096, 32, rows_per_column=2, x_inputs=2)
    config = default_config(gate_up)
    assert config.num_warps == 8 and config.num_stages * stage_bytes(gate_up, config.block_n, config.block_k) <= (
        SHARED_BUDGET
    )
    # The tokens' bucket is the TUNED key: 3 and 4 tokens share one, 5 does not.
    assert GemvShape(64, 64, 3).bucket() == GemvShape(64, 64, 4).bucket() != GemvShape(64, 64, 5).bucket()
    table = {GemvShape(64, 64, 4): DecodeConfig(32, 32, 2, 1)}
    assert config_for(GemvShape(64, 64, 3), table) == DecodeConfig(32, 32, 2, 1)
    assert config_for(GemvShape(64, 64, 5), table) == default_config(GemvShape(64, 64, 5))


@pytest.mark.parametrize(
    "shape", [GemvShape(1024, 3072, 1), GemvShape(6144, 4096, 32, 1, 2), GemvShape(12288, 4096, 32, 2, 2)]
)
def test_autotune_candidates_start_with_the_default_and_fit_shared_memory(shape: GemvShape) -> None:
    candidates = autotune_candidates(shape)
    assert candidates[0] == default_config(shape) and len(set(candidates)) == len(candidates) <= 12
    assert all(c.num_stages * stage_bytes(shape, c.block_n, c.block_k) <= SHARED_BUDGET for c in candidates)


HOPPER_SHARED = 227 << 10  # shared memory a block may have on sm_90


@pytest.mark.slow
@pytest.mark.parametrize("tokens", [1, 8, 32])
@pytest.mark.parametrize(("n", "k", "silu"), [(4096, 1024, False), (3072, 1024, True), (6144, 4096, False),
                                              (12288, 4096, True)])  # fmt: skip
def test_fused_norm_kernels_compile_for_hopper_without_spills(n: int, k: int, silu: bool, tokens: int) -> None:
    """The qkv and gate_up sites of Qwen3-0.6B / 8B with their default configs, compiled for sm_90 here (no GPU):
    no register spills, shared memory within a block's limit."""
    pytest.importorskip("triton")
    from ascend_graph.kernels.decode_resources import hopper_resources
    from ascend_graph.kernels.decode_triton import kernel_flags

    shape = GemvShape(n, k, tokens, 2 if silu else 1, 2, norm=True)
    flags = kernel_flags(torch.bfloat16, norm=True, residual=True, fp32_sum=True, silu_mul=silu)
    found = hopper_resources(shape, flags, default_config(shape))
    assert found.stack == 0 and found.registers < 255 and found.shared <= HOPPER_SHARED, found


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


# What the interpreter needs to compute as the GPU does; run before each check under TRITON_INTERPRET=1.
INTERPRETER_PRELUDE = """
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
"""

INTERPRETER_CHECK = """
from tests.kernels.test_decode_linear import assert_close, check_bench_variants, decode_cases
from ascend_graph.kernels import decode_triton as dt

check_bench_variants("cpu")
launchers = {"decode_linear": dt.decode_linear_cuda, "decode_gate_up_silu": dt.decode_gate_up_silu_cuda,
             "rms_norm_linear": dt.rms_norm_linear_cuda}
torch.manual_seed(0)
checked = 0
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    for tokens in (1, 3, 8):
        # K = 100: the K loop runs twice (block_k 64) with a masked tail; N = 80: five programs of 16 rows.
        for case in decode_cases("cpu", dtype, hidden=100, out=80, inter=40, tokens=tokens):
            launcher = launchers[case.op._qualified_op_name.split("::")[1]]
            assert_close(launcher(*case.args), case.reference(*case.args), dtype, case.name, case.streamed)
            checked += 1
print("checked", checked)
"""


def run_interpreted(check: str) -> str:
    """Run `check` in a fresh process under Triton's interpreter (after INTERPRETER_PRELUDE); its stdout."""
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", INTERPRETER_PRELUDE + check], env=env, cwd=root, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def check_bench_variants(device: str) -> None:
    """The benchmark compares like with like: each Triton variant of a site computes what its cuBLAS or unfused
    counterpart does."""
    from bench import decode_kernels as bench

    bench.DEVICE, bench.ROTATION_BYTES = device, 1
    counterpart = {"triton": "cublas", "triton_silu": "cublas_silu"}
    for site in [bench.Site("m", "qkv", 96, 64), bench.Site("m", "o_proj", 64, 80),
                 bench.Site("m", "gate_up", 96, 64), bench.Site("m", "lm_head", 80, 64)]:  # fmt: skip
        weights = bench.make_weights(site)
        variants = bench.variant_calls(site, bench.make_inputs(site, 3, weights))
        assert "triton_fused" in variants or site.kind == "lm_head", sorted(variants)
        for name, variant in variants.items():
            if not name.startswith("triton"):
                continue
            assert variant.config is not None, name
            got, expected = variant.call(weights[0]), variants[counterpart.get(name, "unfused")].call(weights[0])
            expected = expected[0] if isinstance(expected, tuple) else expected
            streamed = name == "triton_fused" or name.removeprefix("triton_fused_") in NORM_VARIANTS
            assert_close(got[0], expected, torch.bfloat16, f"{site.kind} {name}", streamed=streamed)


def test_decode_kernel_maths_under_the_interpreter() -> None:
    assert "checked 117" in run_interpreted(INTERPRETER_CHECK)


def check_streamed_norm_accuracy(device: str, launch: Any, shapes: list[tuple[int, int, int]], draws: int) -> str:
    """The streamed norm against the float64 result, over fresh draws of every rms_norm_linear variant (bfloat16):
    each case's relative error within the bfloat16-operand band (1e-2), and the error over all cases no larger
    than the bfloat16 reference's (10% margin; measured under the interpreter: 0.8 to 0.9 of it)."""
    cases = []
    for hidden, out, inter in shapes:
        for draw in range(draws):
            torch.manual_seed(draw)
            for tokens in (1, 3, 8):
                found = decode_cases(device, torch.bfloat16, hidden, out=out, inter=inter, tokens=tokens)
                cases += [case for case in found if case.streamed]
    worst, streamed, reference = relative_errors(cases, launch)
    assert worst <= 1e-2 and streamed <= 1.1 * reference, (worst, streamed, reference)
    return f"streamed {streamed:.2e} reference {reference:.2e} worst {worst:.2e} over {len(cases)}"


def test_streamed_norm_is_as_accurate_as_the_reference() -> None:
    check = """
from tests.kernels.test_decode_linear import check_streamed_norm_accuracy
from ascend_graph.kernels import decode_triton as dt
print(check_streamed_norm_accuracy("cpu", dt.rms_norm_linear_cuda, [(100, 80, 40), (1024, 64, 32)], draws=2))
"""
    assert "streamed" in run_interpreted(check)


def check_every_output_element_written(device: str) -> None:
    """With every fresh buffer poisoned (NaN), the streamed norm's outputs equal the reference's: each K slice of x
    + residual has one owner whether the grid has fewer programs than K slices (1 and 3 programs, 7 slices) or more
    (10), and the exact path's program 0 writes all of it."""
    from ascend_graph.kernels import decode_triton as dt

    empty = torch.empty

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        return empty(*args, **kwargs).fill_(float("nan"))

    torch.manual_seed(0)
    x, residual = torch.randn(3, 100, device=device), torch.randn(3, 100, device=device)
    norm_weight = torch.rand(100, device=device) + 0.5
    torch.empty = poisoned
    try:
        for rows in (16, 48, 160):
            weight = torch.randn(rows, 100, device=device) * 0.1
            for exact in (False, True):
                out, total = dt.launch(x, weight, residual=residual, norm_weight=norm_weight, eps=1e-6,
                                       exact_rounding=exact, config=DecodeConfig(16, 16, 4, 1))  # fmt: skip
                expected = decode_ops.rms_norm_linear_reference(x, residual, norm_weight, 1e-6, weight, False, False)
                assert torch.equal(total, expected[1]), (rows, exact)
                torch.testing.assert_close(out, expected[0], **TOLERANCES[torch.float32])
    finally:
        torch.empty = empty


def test_streamed_norm_writes_every_output_element() -> None:
    check = """
from tests.kernels.test_decode_linear import check_every_output_element_written
check_every_output_element_written("cpu")
print("written")
"""
    assert "written" in run_interpreted(check)
