"""Graph mode equals eager: three architectures, runtime sizes on exact buckets, padded and above the largest
capture size; outputs poisoned before every replay; fresh random inputs on every call; counters prove that the
graphs really ran. Tolerances: float32, atol 1e-5 and rtol 1e-4 (same kernels, same order; the slack covers
BLAS batch-size-dependent blocking)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

import ascend_graph
from ascend_graph.backend import GraphCompiled
from ascend_graph.errors import (
    InputDeviceError,
    InputDtypeError,
    InputRankError,
    InputShapeError,
    StaticInputMovedError,
)
from ascend_graph.signature import InputKind

from .helpers import check_batches, compile_recording, direct_args, poison_outputs
from .models import hf_qwen3, mlp, qwen3

ATOL, RTOL = 1e-5, 1e-4
SIZES = (2, 4, 8)
# exact buckets, padded sizes, above the largest size, and 1 (dynamo specialises it: its own static graph)
RUNTIME_SIZES = (4, 3, 8, 5, 2, 9, 7, 1, 12, 6)


def _expected_counts(runtime_sizes: tuple[int, ...]) -> dict[str, int]:
    in_range = [n for n in runtime_sizes if n <= max(SIZES)]
    return {
        "captures": len(SIZES) + (1 if 1 in runtime_sizes else 0),
        "replays": len(in_range),
        "eager_calls": len(runtime_sizes) - len(in_range),
    }


def test_mlp_matches_eager_on_every_size(device: str) -> None:
    model = mlp(device)
    compiled, pieces = compile_recording(model, capture_sizes=list(SIZES))
    with torch.no_grad():
        for n in RUNTIME_SIZES:
            x = torch.randn(n, 32, device=device)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
    counts = ascend_graph.counters()
    for key, value in _expected_counts(RUNTIME_SIZES).items():
        assert counts[key] == value, (key, counts)


def test_qwen3_decoder_with_static_kv_cache_matches_eager(device: str) -> None:
    """Many decode steps with changing batch sizes: the padded rows must never corrupt the cache."""
    eager = qwen3(device)
    graph_model = copy.deepcopy(eager)
    compiled, pieces = compile_recording(graph_model, capture_sizes=list(SIZES), pad_values=eager.pad_values)
    generator = torch.Generator().manual_seed(1)
    positions = torch.zeros(eager.max_batch, dtype=torch.long)
    steps = (3, 8, 5, 2, 4, 7, 6, 8, 3, 5, 8, 2)
    with torch.inference_mode():
        for n in steps:
            ids = torch.randint(0, eager.shape.vocab, (n,), generator=generator).to(device)
            pos = positions[:n].to(device)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(ids, pos), eager(ids, pos), atol=ATOL, rtol=RTOL)
            positions[:n] += 1
    used = int(positions.max())
    torch.testing.assert_close(graph_model.kv_cache[..., :used, :, :], eager.kv_cache[..., :used, :, :])
    assert ascend_graph.counters()["replays"] == len(steps)
    assert ascend_graph.counters()["captures"] == len(SIZES)


def test_transformers_model_from_config_matches_eager(device: str) -> None:
    model = hf_qwen3(device)
    compiled, pieces = compile_recording(model, capture_sizes=list(SIZES))
    seq = 6
    with torch.no_grad():
        for n in (4, 3, 8, 9, 2):
            ids = torch.randint(0, 256, (n, seq), device=device)
            poison_outputs(pieces)
            got = compiled(input_ids=ids).logits
            torch.testing.assert_close(got, model(input_ids=ids).logits, atol=ATOL, rtol=RTOL)
    counts = ascend_graph.counters()
    assert counts["replays"] == 4 and counts["eager_calls"] == 1, counts


def test_registered_backend_name_works() -> None:
    model = mlp("cpu")
    compiled = torch.compile(model, backend="ascend_graph", dynamic=True, options={"capture_sizes": [4, 8]})
    with torch.no_grad():
        x = torch.randn(6, 32)
        torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
    assert ascend_graph.counters()["replays"] == 1


def test_over_max_size_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    model = mlp("cpu")
    compiled, _ = compile_recording(model, capture_sizes=[2, 4])
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        check_batches(model, compiled, (3, 9, 11), ATOL, RTOL)
    messages = [r.getMessage() for r in caplog.records if "above the largest capture size" in r.getMessage()]
    assert len(messages) == 1, messages


def test_static_output_mode_returns_the_graph_buffer_overwritten_by_next_replay() -> None:
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[4], output_mode="static")
    with torch.no_grad():
        x1, x2 = torch.randn(4, 32), torch.randn(4, 32)
        first = compiled(x1)
        assert first.data_ptr() == pieces[0].captures[4].outputs[0].data_ptr()
        expected_first = model(x1)
        torch.testing.assert_close(first, expected_first, atol=ATOL, rtol=RTOL)
        compiled(x2)
        torch.testing.assert_close(first, model(x2), atol=ATOL, rtol=RTOL)  # overwritten, as documented


def test_clone_output_mode_survives_next_call() -> None:
    model = mlp("cpu")
    compiled, _ = compile_recording(model, capture_sizes=[4])
    with torch.no_grad():
        x1, x2 = torch.randn(4, 32), torch.randn(4, 32)
        first = compiled(x1)
        compiled(x2)
        torch.testing.assert_close(first, model(x1), atol=ATOL, rtol=RTOL)


def test_grad_enabled_runs_eagerly_and_keeps_autograd() -> None:
    model = mlp("cpu")
    compiled, _ = compile_recording(model, capture_sizes=[4])
    x = torch.randn(3, 32)
    compiled(x).sum().backward()
    assert model[0].weight.grad is not None
    assert ascend_graph.counters()["eager_fallbacks"] == 1
    assert ascend_graph.counters()["replays"] == 0


def test_transformers_model_new_sequence_length_stays_correct() -> None:
    """A second dynamic size (sequence length) is pinned at capture; dynamo or the pinned check keep it right."""
    model = hf_qwen3("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[4])
    with torch.no_grad():
        for n, seq in ((3, 5), (4, 5), (3, 7)):
            ids = torch.randint(0, 256, (n, seq))
            torch.testing.assert_close(
                compiled(input_ids=ids).logits, model(input_ids=ids).logits, atol=ATOL, rtol=RTOL
            )
    assert pieces[0].signature.pinned, "the sequence length should be a pinned symbol"


def test_pinned_symbol_mismatch_runs_eagerly_on_direct_call(caplog: pytest.LogCaptureFixture) -> None:
    def two_dims(x: torch.Tensor) -> torch.Tensor:
        return (x * 2).sum(dim=1, keepdim=True) + x

    compiled, pieces = compile_recording(two_dims, capture_sizes=[4])
    compiled(torch.randn(3, 5))
    piece = pieces[0]
    assert len(piece.signature.symbols) == 2, piece.signature.symbols
    x = torch.randn(3, 6)  # the second size differs from the one captured
    with caplog.at_level(logging.WARNING, logger="ascend_graph"):
        (out,) = piece(*direct_args(piece, x=x))
    torch.testing.assert_close(out, two_dims(x))
    assert any("differs from 5" in r.getMessage() for r in caplog.records)


class TestBadInput:
    """Inputs a captured graph cannot take raise named errors instead of computing garbage. Dynamo's guards
    keep such inputs away from torch.compile users; direct callers (runners, vLLM's wrapper) get these."""

    @pytest.fixture
    def piece(self) -> GraphCompiled:
        model = mlp("cpu")
        compiled, pieces = compile_recording(model, capture_sizes=[4, 8])
        with torch.no_grad():
            compiled(torch.randn(3, 32))
        return pieces[0]

    def _call(self, piece: GraphCompiled, x: torch.Tensor) -> None:
        name = next(spec.name for spec in piece.signature.inputs if spec.kind is InputKind.DYNAMIC)
        args = direct_args(piece, **{name: x})
        if x.dim() != 2:  # no SymInt can stand for a dimension that is not there: reuse the batch size
            args = [3 if isinstance(a, int) else a for a in args]
        with torch.no_grad():
            piece(*args)

    def test_dtype(self, piece: GraphCompiled) -> None:
        with pytest.raises(InputDtypeError, match="dtype torch.float64.*captured with torch.float32"):
            self._call(piece, torch.randn(3, 32, dtype=torch.float64))

    def test_device(self, piece: GraphCompiled) -> None:
        with pytest.raises(InputDeviceError, match="device meta"):
            self._call(piece, torch.empty(3, 32, device="meta"))

    def test_rank(self, piece: GraphCompiled) -> None:
        with pytest.raises(InputRankError, match="3 dimensions.*captured with 2"):
            self._call(piece, torch.randn(3, 32, 1))

    def test_shape(self, piece: GraphCompiled) -> None:
        with pytest.raises(InputShapeError, match=r"shape \(3, 33\)"):
            self._call(piece, torch.randn(3, 33))


def test_moved_buffer_runs_eagerly_and_debug_mode_raises() -> None:
    model = qwen3("cpu")
    for debug in (False, True):
        torch._dynamo.reset()
        compiled, pieces = compile_recording(model, capture_sizes=[4], debug=debug, pad_values=model.pad_values)
        with torch.inference_mode():
            ids, pos = torch.randint(0, 512, (3,)), torch.zeros(3, dtype=torch.long)
            compiled(ids, pos)
            piece = pieces[0]
            args = direct_args(piece, token_ids=ids, positions=pos)
            cache_index = next(i for i, s in enumerate(piece.signature.inputs) if "kv_cache" in s.name)
            args[cache_index] = args[cache_index].clone()  # same shape, another address
            if debug:
                with pytest.raises(StaticInputMovedError, match="kv_cache"):
                    piece(*args)
            else:
                before = ascend_graph.counters()["eager_calls"]
                piece(*args)
                assert ascend_graph.counters()["eager_calls"] == before + 1


@pytest.mark.slow
@pytest.mark.parametrize("lowering", ["aten", "inductor"])
def test_each_lowering_matches_eager_on_qwen3(device: str, lowering: str) -> None:
    """Both lowerings of the decoder, padded and exact sizes. Inductor reorders float math: atol 1e-4."""
    eager = qwen3(device)
    graph_model = copy.deepcopy(eager)
    compiled, pieces = compile_recording(
        graph_model, capture_sizes=[2, 4], pad_values=eager.pad_values, lowering=lowering
    )
    assert all(piece.lowering == lowering for piece in pieces) or not pieces
    with torch.inference_mode():
        for step, n in enumerate((3, 4, 2, 3)):
            ids = torch.randint(0, eager.shape.vocab, (n,), device=device)
            pos = torch.full((n,), step, device=device)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(ids, pos), eager(ids, pos), atol=1e-4, rtol=1e-3)
    assert pieces[0].lowering == lowering
    assert ascend_graph.counters()["replays"] == 4
