"""silu_and_mul on the NPU path without a copy: `merged_gate_up` finds [gate | up] as one buffer, and
`silu_and_mul_npu` hands that buffer to torch_npu.npu_swiglu (a stand-in module here: no NPU in reach), which
splits it in halves itself."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest
import torch
from ascend_graph.kernels import npu, swiglu


def halves(rows: int = 3, width: int = 8, *lead: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    merged = torch.randn(*lead, rows, 2 * width)
    return merged, merged[..., :width], merged[..., width:]


def test_the_halves_of_one_buffer_are_that_buffer_as_a_view() -> None:
    for lead in ((), (2,)):
        merged, gate, up = halves(3, 8, *lead)
        view = swiglu.merged_gate_up(gate, up)
        assert view is not None and view.data_ptr() == merged.data_ptr()
        assert view.shape == merged.shape and torch.equal(view, merged)


def test_a_slice_of_rows_of_the_buffer_still_merges() -> None:
    merged = torch.randn(6, 16)
    part = merged[2:5]
    view = swiglu.merged_gate_up(part[:, :8], part[:, 8:])
    assert view is not None and view.data_ptr() == part.data_ptr() and torch.equal(view, part)


@pytest.mark.parametrize(
    "case",
    ["separate tensors", "up before gate", "a gap between them", "other dtype", "other shape", "strided columns"],
)
def test_anything_else_is_not_merged(case: str) -> None:
    merged, gate, up = halves()
    wide = torch.randn(3, 18)
    pairs = {
        "separate tensors": (gate.clone(), up.clone()),
        "up before gate": (up, gate),
        "a gap between them": (wide[:, :8], wide[:, 10:]),
        "other dtype": (gate, up.to(torch.float64)),
        "other shape": (gate, up[:2]),
        "strided columns": (merged[:, 0:8:2], merged[:, 8:16:2]),
    }
    assert swiglu.merged_gate_up(*pairs[case]) is None


@pytest.fixture
def fake_torch_npu(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.Tensor]]:
    """torch_npu with npu_swiglu as its docs define it (x split in halves along dim: silu(A) * B); records its input."""
    seen: list[torch.Tensor] = []

    def npu_swiglu(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        seen.append(x)
        first, second = x.chunk(2, dim=dim)
        return swiglu.silu_and_mul_reference(first, second)

    monkeypatch.setitem(sys.modules, "torch_npu", types.SimpleNamespace(npu_swiglu=npu_swiglu))
    yield seen


def test_npu_swiglu_reads_vllms_merged_gate_up_without_a_copy(fake_torch_npu: list[torch.Tensor]) -> None:
    merged, gate, up = halves(4, 16)
    out = npu.silu_and_mul_npu(gate, up)
    torch.testing.assert_close(out, swiglu.silu_and_mul_reference(gate, up))
    assert fake_torch_npu[0].data_ptr() == merged.data_ptr()  # the buffer itself, not a concatenated copy


def test_separate_inputs_are_concatenated_and_mismatched_ones_run_the_reference(
    fake_torch_npu: list[torch.Tensor],
) -> None:
    gate, up = torch.randn(4, 16), torch.randn(4, 16)
    torch.testing.assert_close(npu.silu_and_mul_npu(gate, up), swiglu.silu_and_mul_reference(gate, up))
    assert fake_torch_npu[0].shape == (4, 32) and fake_torch_npu[0].data_ptr() not in (gate.data_ptr(), up.data_ptr())
    broadcast_up = torch.randn(1, 16)
    expected = swiglu.silu_and_mul_reference(gate, broadcast_up)
    torch.testing.assert_close(npu.silu_and_mul_npu(gate, broadcast_up), expected)
    assert len(fake_torch_npu) == 1  # the broadcasting pair never reached npu_swiglu
