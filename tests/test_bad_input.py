"""Bad input never gives a wrong answer: a size over the largest capture size runs eagerly (logged once, counted);
a wrong dtype or device raises a named error saying what was expected; non-contiguous inputs (and views of the
graph's own buffers) are copied in correctly; NaN passes through exactly as in eager mode, and debug mode stops
at it with a named error. float32 tolerances: atol 1e-5, rtol 1e-4."""

from __future__ import annotations

import logging

import pytest
import torch

import ascend_graph
from ascend_graph.backend import GraphCompiled
from ascend_graph.errors import InputDeviceError, InputDtypeError, NonFiniteInputError
from ascend_graph.signature import InputKind

from .helpers import check_batches, compile_recording, direct_args, poison_outputs
from .models import mlp, qwen3

ATOL, RTOL = 1e-5, 1e-4


def _mlp_piece(**options: object) -> tuple[torch.nn.Module, GraphCompiled]:
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[4, 8], **options)
    with torch.no_grad():
        compiled(torch.randn(3, 32))
    return model, pieces[0]


def _direct(piece: GraphCompiled, x: torch.Tensor) -> torch.Tensor:
    name = next(spec.name for spec in piece.signature.inputs if spec.kind is InputKind.DYNAMIC)
    with torch.no_grad():
        return piece(*direct_args(piece, **{name: x}))[0]


def test_size_over_the_largest_capture_size_is_eager_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = mlp("cpu")
    compiled, _ = compile_recording(model, capture_sizes=[2, 4])
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        check_batches(model, compiled, (3, 9, 11, 4, 17), ATOL, RTOL)
    messages = [r.getMessage() for r in caplog.records if "above the largest capture size 4" in r.getMessage()]
    assert len(messages) == 1, messages
    counts = ascend_graph.counters()
    assert counts["eager_calls"] == 3 and counts["replays"] == 2


def test_wrong_dtype_names_expected_and_got() -> None:
    model = qwen3("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[4], pad_values=model.pad_values)
    with torch.inference_mode():
        compiled(torch.randint(0, 512, (3,)), torch.zeros(3, dtype=torch.long))
        piece = pieces[0]
        args = direct_args(piece, token_ids=torch.randint(0, 512, (3,), dtype=torch.int32), positions=torch.zeros(3))
        with pytest.raises(InputDtypeError, match=r"token_ids.*dtype torch.int32, but the graph was captured with"):
            piece(*args)


def test_wrong_device_names_expected_and_got() -> None:
    _, piece = _mlp_piece()
    with pytest.raises(InputDeviceError, match="device meta, but the graph was captured on cpu"):
        _direct(piece, torch.empty(3, 32, device="meta"))


@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_non_contiguous_input_through_torch_compile_matches_eager(layout: str) -> None:
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 8])
    with torch.no_grad():
        for n in (3, 8, 5, 2, 9, 6):
            x = torch.randn(32, n).t() if layout == "transposed" else torch.randn(n, 64)[:, ::2]
            assert not x.is_contiguous()
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
    counts = ascend_graph.counters()
    assert counts["replays"] + counts["eager_calls"] == 6 and counts["replays"] >= 1, counts


@pytest.mark.parametrize(
    "make",
    [lambda n: torch.randn(32, n).t(), lambda n: torch.randn(n, 64)[:, ::2], lambda n: torch.randn(n, 32, 2)[..., 0]],
)
def test_non_contiguous_input_is_copied_into_the_contiguous_static_buffer(make: object) -> None:
    model, piece = _mlp_piece()
    for n in (3, 8):
        x = make(n)  # type: ignore[operator]
        assert not x.is_contiguous()
        before = ascend_graph.counters()["replays"]
        torch.testing.assert_close(_direct(piece, x), model(x), atol=ATOL, rtol=RTOL)
        assert ascend_graph.counters()["replays"] == before + 1


def test_views_of_the_graphs_own_buffer_are_read_before_it_is_overwritten() -> None:
    """A caller writing a padded batch into a prefix of the static buffer, or handing another layout of it:
    padding or copying in place would destroy the values before they are read."""
    model, piece = _mlp_piece()
    buffer = next(iter(piece.captures[4].buffers.values()))
    piece.device.synchronize()
    prefix = buffer[:3]
    prefix.copy_(torch.randn(3, 32))
    expected = model(prefix.clone())
    torch.testing.assert_close(_direct(piece, prefix), expected, atol=ATOL, rtol=RTOL)
    piece.device.synchronize()
    buffer.copy_(torch.randn(4, 32))
    relaid = buffer.as_strided((4, 32), (1, 4))  # same address and shape, another layout
    expected = model(relaid.clone())
    torch.testing.assert_close(_direct(piece, relaid), expected, atol=ATOL, rtol=RTOL)


def test_nan_passes_through_as_in_eager_and_does_not_leak_into_later_calls() -> None:
    """The chosen behaviour outside debug mode: NaN in gives NaN out exactly where eager gives it."""
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[4, 8])
    with torch.no_grad():
        x = torch.randn(3, 32)
        x[1, 5] = float("nan")
        got, want = compiled(x), model(x)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, equal_nan=True)
        assert torch.isnan(got[1]).all() and torch.isfinite(got[[0, 2]]).all()
        for n in (3, 4):
            clean = torch.randn(n, 32)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(clean), model(clean), atol=ATOL, rtol=RTOL)
    assert ascend_graph.counters()["replays"] == 3


def test_debug_mode_stops_at_nan_with_a_named_error() -> None:
    _, piece = _mlp_piece(debug=True)
    x = torch.randn(3, 32)
    x[2, 0] = float("nan")
    x[0, 1] = float("inf")
    with pytest.raises(NonFiniteInputError, match=r"1 NaN and 1 infinite values \(first rows \[0, 2\]\)"):
        _direct(piece, x)


@pytest.mark.slow
def test_non_contiguous_trace_with_a_compiled_lowering_runs_eagerly_with_a_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """inductor bakes input strides in; contiguous static buffers would not match, so the graph runs eagerly."""
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[4, 8], lowering="inductor")
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        for n in (3, 6):
            x = torch.randn(32, n).t()
            torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-3)
    assert any("traced non-contiguous" in r.getMessage() for r in caplog.records)
    assert all(piece.fallback_reason is not None for piece in pieces)
