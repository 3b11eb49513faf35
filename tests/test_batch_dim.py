"""Graph mode buckets only the batch/token dimension, and never raises for its own reasons.

Models of several shapes of dynamism — batch only, batch + sequence (positions index a position table), sequence
only, and the batch + sequence model first called at batch 1 (dynamo specialises size 1, so that graph has no
symbolic batch dimension) — are called in random orders of sizes and compared with eager on fresh random inputs.
Tolerances: float32, atol 1e-5 / rtol 1e-4 (same kernels, same order; the slack covers BLAS blocking that depends on
the number of rows). The issue this guards: a graph compiled at batch 1 bucketed the sequence dimension instead,
padded it past the position table and raised `IndexError: index out of range in self` from the warm-up.
"""

from __future__ import annotations

import logging
import random

import pytest
import torch
from torch import nn

import ascend_graph
from ascend_graph.errors import AmbiguousBatchDimError

from .helpers import compile_recording, poison_outputs

ATOL, RTOL = 1e-5, 1e-4
TABLE = 12  # positions the position table holds: a padded sequence longer than this indexes past its end
VOCAB, HIDDEN = 50, 32
CAPTURE_SIZES = [1, 2, 4, 8, 16]


class PositionModel(nn.Module):
    """Token + position embeddings (positions = arange(sequence length) into a table), then a per-row MLP."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tokens = nn.Embedding(VOCAB, HIDDEN)
        self.positions = nn.Embedding(TABLE, HIDDEN)
        self.mlp = nn.Sequential(nn.Linear(HIDDEN, 64), nn.GELU(), nn.Linear(64, HIDDEN))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[-1], device=ids.device)
        return self.mlp(self.tokens(ids) + self.positions(positions))


class RowMixing(nn.Module):
    """Every row attends to every other (no mask): padding rows would change every answer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        return torch.softmax(h @ h.transpose(-1, -2) / HIDDEN**0.5, dim=-1) @ h


def _batch_only(rng: random.Random) -> tuple[int, ...]:
    return (rng.randint(1, 20),)


def _batch_and_sequence(rng: random.Random) -> tuple[int, ...]:
    return (rng.randint(1, 20), rng.randint(1, TABLE))


def _sequence_only(rng: random.Random) -> tuple[int, ...]:
    return (rng.randint(1, TABLE),)


SHAPES = {
    # name: (model factory, input kind, draw of one call's shape, first call's shape or None)
    "batch-only": (lambda: nn.Sequential(nn.Linear(HIDDEN, 64), nn.GELU(), nn.Linear(64, HIDDEN)), "x", _batch_only),
    "batch+sequence": (PositionModel, "ids", _batch_and_sequence),
    "sequence-only": (PositionModel, "ids", _sequence_only),
    "batch-1-first": (PositionModel, "ids", _batch_and_sequence),
}


def _input(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if kind == "x":
        return torch.randn(*shape, HIDDEN, generator=generator)
    return torch.randint(0, VOCAB, shape, generator=generator)


def _call_order(name: str, seed: int, calls: int = 10) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    draw = SHAPES[name][2]
    order = [draw(rng) for _ in range(calls)]
    if name == "batch-1-first":
        order[0] = (1, rng.randint(2, TABLE))
    return order


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(SHAPES))
def test_random_call_orders_match_eager_and_never_raise(name: str, seed: int) -> None:
    factory, kind, _ = SHAPES[name]
    model = factory().eval()
    compiled, pieces = compile_recording(model, capture_sizes=CAPTURE_SIZES)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for shape in _call_order(name, seed):
            value = _input(kind, shape, generator)
            poison_outputs(pieces)
            got, expected = compiled(value), model(value)
            assert got.shape == expected.shape, shape
            torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
    counts = ascend_graph.counters()
    assert counts["replays"] > 0, counts  # graph mode really served calls
    for piece in pieces:  # never a sequence dimension bucketed where a batch dimension exists
        if piece.signature.symbol is not None and kind == "ids" and name != "sequence-only":
            assert "ids dim 0" in piece.signature.batch_where, piece.signature.batch_where


def test_batch_one_first_with_a_position_table_is_captured_as_traced(caplog: pytest.LogCaptureFixture) -> None:
    """The issue's reproduction: first call at batch 1, sequence 5, capture sizes up to 16 > the table."""
    model = PositionModel().eval()
    compiled, pieces = compile_recording(model, capture_sizes=CAPTURE_SIZES)
    ids = torch.randint(0, VOCAB, (1, 5))
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="ascend_graph"):
        torch.testing.assert_close(compiled(ids), model(ids), atol=ATOL, rtol=RTOL)
    piece = pieces[0]
    assert piece.signature.symbol is None and list(piece.signature.pinned.values()) == [5]
    assert list(piece.captures) == [None] and not piece.size_fallbacks
    assert any("no batch dimension" in r.getMessage() for r in caplog.records)
    report = piece.report()
    assert "no dynamic size at batch_dim=0" in report["batch_dimension"] and list(report["pinned"].values()) == [5]
    counts = ascend_graph.counters()
    assert counts["captures"] == 1 and counts["replays"] == 1 and counts["capture_failures"] == 0, counts


def test_bucketed_sequence_past_the_table_runs_those_sizes_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    """Sequence only ([S], dimension 0 by default): sizes whose padded warm-up indexes past the table (16 > 12)
    run eagerly, one warning with the reason and advice, counted; the other sizes replay."""
    model = PositionModel().eval()
    compiled, pieces = compile_recording(model, capture_sizes=CAPTURE_SIZES)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        for length in (3, 10, 7, 12, 11, 5):
            ids = torch.randint(0, VOCAB, (length,))
            torch.testing.assert_close(compiled(ids), model(ids), atol=ATOL, rtol=RTOL)
    piece = pieces[0]
    assert set(piece.size_fallbacks) == {16} and set(piece.captures) == {2, 4, 8}
    fallback = piece.size_fallbacks[16]
    assert "IndexError" in fallback.reason and "batch_dim" in fallback.advice and "pad_values" in fallback.advice
    warnings = [r.getMessage() for r in caplog.records if "capture_failed" in r.getMessage()]
    assert len(warnings) == 2, warnings  # at capture (with advice), and at the first call served eagerly
    counts = ascend_graph.counters()
    assert counts["capture_failures"] == 1 and counts["replays"] == 3 and counts["eager_calls"] == 3, counts


def test_mark_dynamic_names_the_bucketed_dimension() -> None:
    """dynamic=True makes both dimensions symbolic; the one the user marked is the one bucketed."""
    model = PositionModel().eval()
    compiled, pieces = compile_recording(model, capture_sizes=[4, 8])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for length in (3, 8, 6):
            ids = torch.randint(0, VOCAB, (2, length), generator=generator)
            torch._dynamo.mark_dynamic(ids, 1)
            torch.testing.assert_close(compiled(ids), model(ids), atol=ATOL, rtol=RTOL)
    assert pieces[0].signature.batch_where.startswith(f"{pieces[0].signature.symbol} (ids dim 1;")
    assert "mark_dynamic" in pieces[0].signature.batch_where
    assert ascend_graph.counters()["replays"] == 3


def test_named_batch_dim_option_picks_the_argument() -> None:
    def two_inputs(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return x @ table.T

    x, table = torch.randn(3, HIDDEN), torch.randn(5, HIDDEN)
    compiled, pieces = compile_recording(two_inputs, capture_sizes=[4, 8], batch_dim={"x": 0})
    torch.testing.assert_close(compiled(x, table), two_inputs(x, table), atol=ATOL, rtol=RTOL)
    signature = pieces[0].signature
    assert "x dim 0" in signature.batch_where and 5 in signature.pinned.values()  # the table's rows, pinned
    assert ascend_graph.counters()["replays"] == 1


def test_ambiguous_batch_dimension_is_a_named_error() -> None:
    def two_inputs(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return x @ table.T

    compiled, _ = compile_recording(two_inputs, capture_sizes=[4, 8])
    with pytest.raises(Exception, match="AmbiguousBatchDimError") as raised:
        compiled(torch.randn(3, HIDDEN), torch.randn(5, HIDDEN))
    inner = getattr(raised.value, "inner_exception", raised.value)  # dynamo wraps backend errors
    assert isinstance(inner, AmbiguousBatchDimError) and isinstance(inner, ValueError)
    assert "x dim 0" in str(inner) and "table dim 0" in str(inner) and "batch_dim" in str(inner)


def test_batch_dim_none_keeps_a_row_mixing_model_right() -> None:
    """Rows attend to each other: padding them would change answers. batch_dim="none" captures each graph at its
    traced sizes; other sizes run eagerly (dynamo may also recompile for them)."""
    model = RowMixing().eval()
    compiled, pieces = compile_recording(model, capture_sizes=[4, 8], batch_dim="none")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for rows in (3, 3, 6, 3):
            x = torch.randn(rows, HIDDEN, generator=generator)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
    assert all(piece.signature.symbol is None for piece in pieces)
    assert ascend_graph.counters()["replays"] >= 3


def test_a_replay_that_raises_gives_the_models_own_error_then_replays_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A token id past the vocabulary fails inside the replayed graph (on the CPU stream): the caller gets what
    eager mode gives, the model's IndexError, not graph mode's stream error; the next good call replays."""
    model = PositionModel().eval()
    compiled, _ = compile_recording(model, capture_sizes=[4, 8])
    good = torch.randint(0, VOCAB, (3, 5))
    bad = good.clone()
    bad[1, 2] = VOCAB + 7
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        torch.testing.assert_close(compiled(good), model(good), atol=ATOL, rtol=RTOL)
        with pytest.raises(IndexError):
            model(bad)
        with pytest.raises(IndexError):
            compiled(bad)
        torch.testing.assert_close(compiled(good), model(good), atol=ATOL, rtol=RTOL)
    counts = ascend_graph.counters()
    assert counts["replay_failures"] == 1 and counts["replays"] == 2 and counts["eager_calls"] == 1, counts
    assert len([r for r in caplog.records if "replay of size 4 raised" in r.getMessage()]) == 1
