"""The shadow-eager verifier: a planted per-size mismatch is caught, reported and that size runs eagerly; a correct
graph passes; verification leaves a KV cache exactly as it found it. Tolerances: float32 atol 1e-4 / rtol 1e-3
(the verifier's defaults); the planted error is 1e-2 on every element of one size."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import ascend_graph
from ascend_graph.config import GraphConfig
from ascend_graph.device.cpu import CPU_DEVICE

from .helpers import compile_recording, poison_outputs
from .models import mlp, qwen3

ATOL, RTOL = 1e-5, 1e-4
PLANTED_ERROR = 1e-2


@pytest.fixture
def perturb_size_4(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A broken "lowering" for one size: the graph captured at batch 4 adds 1e-2 to its output on every replay."""
    original = CPU_DEVICE.capture

    def perturbed(fn: Any) -> Any:
        def run(*inputs: Any) -> Any:
            return [out + PLANTED_ERROR if isinstance(out, torch.Tensor) else out for out in fn(*inputs)]

        return run

    def capture(fn: Any, args: Any, pool: Any) -> Any:
        if any(isinstance(a, torch.Tensor) and tuple(a.shape) == (4, 32) for a in args):
            return original(perturbed(fn), args, pool)
        return original(fn, args, pool)

    monkeypatch.setattr(CPU_DEVICE, "capture", capture)
    yield


def test_correct_graph_passes_verification_and_replays() -> None:
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 8], verify=True)
    with torch.no_grad():
        for n in (3, 8, 2, 6):
            x = torch.randn(n, 32)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
    results = pieces[0].verify_results
    assert sorted(r.size for r in results) == [2, 4, 8] and all(r.ok for r in results), results
    counts = ascend_graph.counters()
    assert counts["verified_sizes"] == 3 and counts["verify_mismatches"] == 0
    assert counts["replays"] == 4 and counts["eager_calls"] == 0


def test_planted_mismatch_is_wrong_without_the_verifier(perturb_size_4: None) -> None:
    """The planted bug is real: without verify, size 4 (and 3, padded to it) gives wrong answers."""
    model = mlp("cpu")
    compiled, _ = compile_recording(model, capture_sizes=[2, 4, 8])
    with torch.no_grad():
        x = torch.randn(3, 32)
        error = (compiled(x) - model(x)).abs().max().item()
    assert error == pytest.approx(PLANTED_ERROR, rel=1e-3)


def test_planted_mismatch_is_caught_reported_and_falls_back(
    perturb_size_4: None, caplog: pytest.LogCaptureFixture
) -> None:
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 8], verify=True)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        for n in (3, 4, 2, 7, 3):
            x = torch.randn(n, 32)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
    piece = pieces[0]
    bad = [r for r in piece.verify_results if not r.ok]
    assert [r.size for r in bad] == [4], piece.verify_results
    assert bad[0].max_abs_error == pytest.approx(PLANTED_ERROR, rel=1e-3)
    assert (bad[0].atol, bad[0].rtol) == (1e-4, 1e-3)
    assert 4 not in piece.captures and set(piece.captures) == {2, 8}
    assert piece.size_fallbacks[4].cause == "verify_mismatch"
    reports = [r.getMessage() for r in caplog.records if "verify_mismatch" in r.getMessage()]
    # one report at capture time, one when the first call of that size runs eagerly; none repeated
    assert len(reports) == 2 and all("size 4" in m and "max abs error 0.01" in m for m in reports), reports
    assert "atol=0.0001 rtol=0.001" in reports[0]
    counts = ascend_graph.counters()
    assert counts["verify_mismatches"] == 1 and counts["verified_sizes"] == 3
    assert counts["eager_calls"] == 3 and counts["replays"] == 2  # 3, 4, 3 eager; 2 and 7 replayed
    report = piece.report()
    assert report["fallbacks"][0]["size"] == 4 and report["fallbacks"][0]["cause"] == "verify_mismatch"
    assert [row["size"] for row in report["captured"]] == [2, 8]


def test_tolerance_override_decides(perturb_size_4: None) -> None:
    """A tolerance above the planted error lets size 4 through: the tolerance, not chance, makes the verdict."""
    model = mlp("cpu")
    compiled, pieces = compile_recording(
        model, capture_sizes=[2, 4, 8], verify=True, verify_tolerances={"float32": (0.05, 0.0)}
    )
    with torch.no_grad():
        compiled(torch.randn(3, 32))
    assert all(r.ok for r in pieces[0].verify_results) and set(pieces[0].captures) == {2, 4, 8}


def test_verification_leaves_the_kv_cache_untouched() -> None:
    """A pre-filled cache and a first call at later positions: verification writes rows and positions the
    later steps read, so a verifier that did not restore the cache would change every later output."""
    eager = qwen3("cpu", max_batch=8, max_seq=48)
    with torch.no_grad():
        eager.kv_cache.normal_()
    graph_model = copy.deepcopy(eager)
    compiled, pieces = compile_recording(graph_model, capture_sizes=[2, 4, 8], pad_values=eager.pad_values, verify=True)
    generator = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for step, n in enumerate((2, 8, 5, 8)):
            ids = torch.randint(0, eager.shape.vocab, (n,), generator=generator)
            pos = torch.full((n,), 10 + 5 * step)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(ids, pos), eager(ids, pos), atol=ATOL, rtol=RTOL)
    real = slice(0, eager.max_seq)  # position max_seq is the scratch slot padded rows write
    torch.testing.assert_close(graph_model.kv_cache[:, :, :, real], eager.kv_cache[:, :, :, real], atol=ATOL, rtol=RTOL)
    assert all(r.ok for r in pieces[0].verify_results) and len(pieces[0].verify_results) == 3
    assert ascend_graph.counters()["replays"] == 4


def test_environment_switch_turns_verification_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCEND_GRAPH_VERIFY", "1")
    assert GraphConfig.from_options({}).verify is True
    monkeypatch.setenv("ASCEND_GRAPH_VERIFY", "0")
    assert GraphConfig.from_options({}).verify is False


@pytest.mark.parametrize(
    "tolerances",
    [{"int64": (1.0, 0.0)}, {"float32": (-1.0, 0.0)}, {"float32": (1.0,)}, {"float32": "tight"}],
)
def test_bad_tolerances_are_refused_naming_the_allowed(tolerances: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="verify_tolerances.*must be a mapping from a dtype name"):
        GraphConfig.from_options({"verify_tolerances": tolerances})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_verifier_on_cuda_accepts_inductor_and_catches_a_planted_mismatch(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA graphs of the inductor lowering pass the default tolerances of their dtype; a size-4 graph that
    doubles its logits is caught, and calls of that size are served by eager ATen ops."""
    from ascend_graph.device import get_device
    from ascend_graph.models.qwen3 import build_decoder

    cuda = get_device("cuda")
    original = cuda.capture

    def doubled(fn: Any) -> Any:
        def run(*inputs: Any) -> Any:
            return [out * 2 + 1 if isinstance(out, torch.Tensor) else out for out in fn(*inputs)]

        return run

    def capture(fn: Any, args: Any, pool: Any) -> Any:
        batch4 = any(isinstance(a, torch.Tensor) and a.dtype == torch.long and tuple(a.shape) == (4,) for a in args)
        return original(doubled(fn) if batch4 else fn, args, pool)

    monkeypatch.setattr(cuda, "capture", capture)
    eager = build_decoder("tiny", max_batch=8, max_seq=48, dtype=dtype, device="cuda")
    graph_model = copy.deepcopy(eager)
    compiled, pieces = compile_recording(
        graph_model, capture_sizes=[2, 4, 8], pad_values=eager.pad_values, lowering="inductor", verify=True
    )
    with torch.inference_mode():
        ids = torch.randint(0, eager.shape.vocab, (3,), device="cuda")
        pos = torch.full((3,), 5, device="cuda")
        got = compiled(ids, pos)  # size 3 pads to 4: served eagerly after the mismatch
        torch.testing.assert_close(got, eager(ids, pos), atol=1e-5, rtol=1e-5)
    verdicts = {r.size: r for r in pieces[0].verify_results}
    assert {size: r.ok for size, r in verdicts.items()} == {8: True, 4: False, 2: True}, verdicts
    assert set(pieces[0].captures) == {2, 8}
