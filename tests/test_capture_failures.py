"""A capture that fails at one size (injected: the device's graph capture raises for that size) falls back to
eager for that size only, with one warning naming the size and the setting to change; the other sizes still
replay, answers stay those of eager (float32, atol 1e-5 / rtol 1e-4), and the failed size's buffers are freed."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import torch

import ascend_graph
from ascend_graph.device.cpu import CPU_DEVICE
from ascend_graph.fallbacks import error_kind

from .helpers import check_batches, compile_recording, poison_outputs
from .models import mlp

ATOL, RTOL = 1e-5, 1e-4


def fail_capture_at(
    monkeypatch: pytest.MonkeyPatch, size: int, error: Callable[[], BaseException]
) -> list[weakref.ref]:
    """Make the CPU device's capture raise a fresh `error()` for the graph whose batch buffer has `size` rows;
    returns weak references to that size's static arguments, to prove they are released."""
    original = CPU_DEVICE.capture
    refs: list[weakref.ref] = []

    def capture(fn: Callable[..., Any], args: Any, pool: Any) -> Any:
        if any(isinstance(a, torch.Tensor) and tuple(a.shape) == (size, 32) for a in args):
            refs.extend(weakref.ref(a) for a in args if isinstance(a, torch.Tensor) and tuple(a.shape) == (size, 32))
            raise error()
        return original(fn, args, pool)

    monkeypatch.setattr(CPU_DEVICE, "capture", capture)
    return refs


def test_out_of_memory_at_the_largest_size_falls_back_for_that_size_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refs = fail_capture_at(
        monkeypatch, 8, lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    )
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 8])
    sizes = (3, 8, 5, 2, 4, 7, 3)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        for n in sizes:
            x = torch.randn(n, 32)
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(x), model(x), atol=ATOL, rtol=RTOL)
    piece = pieces[0]
    assert set(piece.captures) == {2, 4}
    fallback = piece.size_fallbacks[8]
    assert fallback.cause == "capture_failed" and "OutOfMemoryError" in fallback.reason
    assert "capture_sizes=[2, 4]" in fallback.advice and "gpu-memory-utilization" in fallback.advice
    warnings = [r.getMessage() for r in caplog.records if "capture_failed" in r.getMessage()]
    # one with the advice at capture, one at the first call served eagerly for that size; never per call
    assert len(warnings) == 2 and all("size 8" in m and "OutOfMemoryError" in m for m in warnings), warnings
    assert "capture_sizes=[2, 4]" in warnings[0]
    counts = ascend_graph.counters()
    assert counts["capture_failures"] == 1 and counts["captures"] == 2
    assert counts["eager_calls"] == 3 and counts["replays"] == 4  # 8, 5, 7 eager
    gc.collect()
    assert refs and all(ref() is None for ref in refs), "the failed size's static buffers must be freed"
    assert piece.report()["fallbacks"] == [fallback.as_dict()]


def test_forbidden_operation_during_capture_gets_its_own_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_capture_at(
        monkeypatch, 4, lambda: RuntimeError("CUDA error: operation not permitted when stream is capturing")
    )
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 8])
    with torch.no_grad():
        check_batches(model, compiled, (3, 6), ATOL, RTOL)
    assert set(pieces[0].captures) == {2, 8}
    assert "host synchronisation" in pieces[0].size_fallbacks[4].advice
    assert ascend_graph.counters()["replays"] == 1 and ascend_graph.counters()["eager_calls"] == 1


def test_every_size_failing_leaves_an_eager_graph_that_is_still_right(monkeypatch: pytest.MonkeyPatch) -> None:
    def capture(fn: Callable[..., Any], args: Any, pool: Any) -> Any:
        raise torch.OutOfMemoryError("out of memory (injected)")

    monkeypatch.setattr(CPU_DEVICE, "capture", capture)
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4])
    with torch.no_grad():
        check_batches(model, compiled, (3, 2, 4), ATOL, RTOL)
    assert pieces[0].captures == {} and set(pieces[0].size_fallbacks) == {2, 4}
    counts = ascend_graph.counters()
    assert counts["capture_failures"] == 2 and counts["eager_calls"] == 3 and counts["replays"] == 0


@pytest.mark.parametrize("error", [TypeError, IndexError, ValueError, KeyError, AssertionError])
def test_any_exception_during_capture_leaves_that_size_eager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: type[Exception]
) -> None:
    """Not only device errors: whatever a capture raises, graph mode never fails the call for it."""
    fail_capture_at(monkeypatch, 4, lambda: error("not a device failure (injected)"))
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4])
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        check_batches(model, compiled, (3, 2, 4, 3), ATOL, RTOL)
    fallback = pieces[0].size_fallbacks[4]
    assert error.__name__ in fallback.reason and "batch_dim" in fallback.advice
    assert set(pieces[0].captures) == {2}
    warnings = [r.getMessage() for r in caplog.records if "capture_failed" in r.getMessage()]
    assert len(warnings) == 2 and all(error.__name__ in m for m in warnings), warnings
    counts = ascend_graph.counters()
    assert counts["capture_failures"] == 1 and counts["eager_calls"] == 3 and counts["replays"] == 1, counts


def test_a_lowering_that_raises_leaves_the_whole_graph_eager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_lower(*args: Any) -> Any:
        raise AttributeError("inductor could not lower this op (injected)")

    monkeypatch.setattr("ascend_graph.backend.lower", broken_lower)
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4])
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="ascend_graph"):
        check_batches(model, compiled, (3, 4, 2), ATOL, RTOL)
    reason = pieces[0].fallback_reason
    assert reason is not None and "AttributeError" in reason and "lowering='aten'" in reason
    assert len([r for r in caplog.records if "AttributeError" in r.getMessage()]) == 1
    counts = ascend_graph.counters()
    assert counts["eager_fallbacks"] == 1 and counts["eager_calls"] == 3 and counts["captures"] == 0, counts


def test_a_verifier_that_raises_leaves_that_size_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    from ascend_graph import backend

    original = backend.verify_capture

    def verify(reference: Any, signature: Any, capture: Any, *args: Any) -> Any:
        if capture.size == 4:
            raise KeyError("verifier broke (injected)")
        return original(reference, signature, capture, *args)

    monkeypatch.setattr(backend, "verify_capture", verify)
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4], verify=True)
    with torch.no_grad():
        check_batches(model, compiled, (3, 2), ATOL, RTOL)
    assert set(pieces[0].captures) == {2} and "KeyError" in pieces[0].size_fallbacks[4].reason
    counts = ascend_graph.counters()
    assert counts["verify_errors"] == 1 and counts["eager_calls"] == 1 and counts["replays"] == 1, counts


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("CUDA out of memory. Tried to allocate 20.00 MiB", "memory"),
        ("NPU out of memory. Tried to allocate 1.00 GiB", "memory"),
        ("AclmdlRICaptureBegin error code is 207005 [Error]: Failed to apply for memory.", "memory"),
        ("error code is 207008 [Error]: Stream resources are insufficient.", "streams"),
        ("rtStreamWaitEvent execution failed, reason=driver error:resource alloc fail", "streams"),
        ("CUDA error: operation not permitted when stream is capturing", "forbidden_op"),
        ("something else broke", "other"),
    ],
)
def test_error_classification(message: str, kind: str) -> None:
    assert error_kind(RuntimeError(message)) == kind


def test_out_of_memory_error_type_is_memory_whatever_the_message() -> None:
    assert error_kind(torch.OutOfMemoryError("allocation refused")) == "memory"
