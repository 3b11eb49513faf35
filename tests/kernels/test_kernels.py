"""The fused ops: schema and fake implementation (torch.library.opcheck), the Triton kernels' maths on the CPU
through Triton's interpreter, and (GPU-marked) the Triton kernels on CUDA against the reference at the Qwen3-0.6B
and 8B shapes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from ascend_graph.kernels import norm, rope, swiglu

# float32: summation order only. bfloat16: the kernels round where eager rounds; the mean's summation order can
# move a value by one unit in the last place (2^-8 relative), two allowed.
TOLERANCES = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2}}


def _cases(device: str, dtype: torch.dtype, hidden: int, heads: int, head_dim: int, inter: int, batch: int) -> list:
    """(op, reference, args) for every op and every layout the models give it, fresh random values."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    angles = torch.rand(batch, 1, head_dim // 2, device=device) * 6.3
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    full = torch.rand(batch, 1, 3, head_dim, device=device) * 6.3  # transformers: (batch, 1, seq, head_dim)
    gate_up = randn(batch, 2 * inter)
    weight = 1 + 0.1 * randn(hidden)
    head_weight = 1 + 0.1 * randn(head_dim)
    ops = torch.ops.ascend_graph
    return [
        (ops.rms_norm, norm.rms_norm_reference, (randn(batch, hidden), weight, 1e-6)),
        (
            ops.add_rms_norm,
            norm.add_rms_norm_reference,
            (randn(batch, hidden), randn(batch, hidden), weight, 1e-6, False),
        ),  # noqa: E501
        (
            ops.add_rms_norm,
            norm.add_rms_norm_reference,
            (randn(batch, hidden), randn(batch, hidden), weight, 1e-6, True),
        ),  # noqa: E501
        (ops.rms_norm_rope, rope.rms_norm_rope_reference, (randn(batch, heads, head_dim), head_weight, cos, sin, 1e-6)),  # noqa: E501
        (
            ops.rms_norm_rope,
            rope.rms_norm_rope_reference,
            (
                randn(batch, 3, heads, head_dim),
                head_weight,
                full.cos().to(dtype).transpose(1, 2),
                full.sin().to(dtype).transpose(1, 2),
                1e-6,
            ),
        ),  # fmt: skip
        (ops.silu_and_mul, swiglu.silu_and_mul_reference, (gate_up[:, :inter], gate_up[:, inter:])),
        (ops.silu_and_mul, swiglu.silu_and_mul_reference, (randn(batch, 3, inter), randn(batch, 3, inter))),
    ]


def _assert_close(got: Any, expected: Any, dtype: torch.dtype) -> None:
    got = got if isinstance(got, tuple | list) else (got,)
    expected = expected if isinstance(expected, tuple | list) else (expected,)
    for value, reference in zip(got, expected, strict=True):
        assert value.dtype == reference.dtype and value.shape == reference.shape
        torch.testing.assert_close(value, reference, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ops_schema_and_fake_implementations(dtype: torch.dtype) -> None:
    for op, reference, args in _cases("cpu", dtype, hidden=64, heads=4, head_dim=32, inter=48, batch=3):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
        _assert_close(op(*args), reference(*args), dtype)  # the CPU implementation is the reference


def test_rope_rejects_tables_of_the_wrong_width() -> None:
    x, weight = torch.randn(2, 4, 32), torch.ones(32)
    with pytest.raises(ValueError, match=r"must both be 16 \(half tables\) or 32 \(full tables\)"):
        torch.ops.ascend_graph.rms_norm_rope(x, weight, torch.randn(2, 1, 8), torch.randn(2, 1, 8), 1e-6)


INTERPRETER_CHECK = """
import torch
from tests.kernels.test_kernels import _assert_close, _cases
from ascend_graph.kernels import triton_kernels as tk
launchers = {"rms_norm": tk.rms_norm_cuda, "add_rms_norm": tk.add_rms_norm_cuda,
             "rms_norm_rope": tk.rms_norm_rope_cuda, "silu_and_mul": tk.silu_and_mul_cuda}
torch.manual_seed(0)
checked = 0
for dtype in (torch.float32, torch.bfloat16):
    for op, reference, args in _cases("cpu", dtype, hidden=64, heads=4, head_dim=32, inter=48, batch=3):
        name = op._qualified_op_name.split("::")[1]
        _assert_close(launchers[name](*args), reference(*args), dtype)
        checked += 1
print("checked", checked)
"""


def test_triton_kernels_maths_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", INTERPRETER_CHECK], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checked 14" in done.stdout


QWEN3_SHAPES = {"qwen3-0.6b": (1024, 16, 128, 3072), "qwen3-8b": (4096, 32, 128, 12288)}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")
@pytest.mark.parametrize("shape", sorted(QWEN3_SHAPES))
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernels_equal_the_reference_on_cuda(shape: str, batch: int, dtype: torch.dtype) -> None:
    from ascend_graph.kernels import DEVICE_KERNELS

    assert DEVICE_KERNELS.get("cuda") == "triton", DEVICE_KERNELS
    hidden, heads, head_dim, inter = QWEN3_SHAPES[shape]
    torch.manual_seed(batch)
    for op, reference, args in _cases("cuda", dtype, hidden, heads, head_dim, inter, batch):
        _assert_close(op(*args), reference(*args), dtype)
        # and against the CPU reference, float64 inputs rounded the same way
        cpu_args = [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]
        _assert_close(tuple_or(op(*args), lambda t: t.cpu()), reference(*cpu_args), dtype)


def tuple_or(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    return tuple(fn(v) for v in value) if isinstance(value, tuple | list) else fn(value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")
@pytest.mark.parametrize("lowering", ["aten", "inductor"])
def test_decoder_with_passes_on_cuda_equals_eager(lowering: str) -> None:
    import ascend_graph
    from ascend_graph.models.qwen3 import build_decoder

    model = build_decoder("tiny", max_batch=8, max_seq=48, dtype=torch.bfloat16, device="cuda")
    compiled = torch.compile(
        model,
        backend="ascend_graph",
        dynamic=True,
        options={"capture_sizes": [2, 4, 8], "passes": "all", "lowering": lowering, "pad_values": model.pad_values},
    )
    with torch.no_grad():
        for batch in (4, 3, 8):
            ids = torch.randint(0, 512, (batch,), device="cuda")
            positions = torch.randint(0, 40, (batch,), device="cuda")
            expected = model(ids, positions)
            torch.testing.assert_close(compiled(ids, positions), expected, atol=6e-2, rtol=6e-2)
    assert ascend_graph.counters()["replays"] == 3
