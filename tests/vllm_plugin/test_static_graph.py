"""vLLM's static graph wrapper of ascend_graph without an engine: capture, replay, one graph per input set, and a
failed capture that leaves that batch size eager with advice. The forward context is vLLM's own dataclass."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm")


def _wrapper(monkeypatch: pytest.MonkeyPatch, fn, descriptor):  # noqa: ANN001, ANN202
    from vllm.config import CUDAGraphMode

    from ascend_graph.vllm_plugin import static_graph

    context = SimpleNamespace(cudagraph_runtime_mode=CUDAGraphMode.PIECEWISE, batch_descriptor=descriptor)
    monkeypatch.setattr(static_graph, "is_forward_context_available", lambda: True)
    monkeypatch.setattr(static_graph, "get_forward_context", lambda: context)
    config = SimpleNamespace(
        compilation_config=SimpleNamespace(cudagraph_capture_sizes=[1, 2, 4]), additional_config={"ascend_graph": {}}
    )
    return static_graph.AscendGraphStaticWrapper(fn, config, CUDAGraphMode.PIECEWISE)


def test_replays_read_the_current_inputs_and_sets_get_their_own_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.forward_context import BatchDescriptor

    import ascend_graph

    wrapper = _wrapper(monkeypatch, lambda x: x * 2 + 1, BatchDescriptor(num_tokens=4))
    before = ascend_graph.counters()
    a, b = torch.randn(4), torch.randn(4)
    assert torch.equal(wrapper(a), a * 2 + 1)  # capture for set a
    a.copy_(torch.randn(4))
    assert torch.equal(wrapper(a), a * 2 + 1)  # replay reads a's new values
    assert torch.equal(wrapper(b), b * 2 + 1)  # another address: its own graph, nothing copied into a's
    after = ascend_graph.counters()
    assert after["captures"] - before["captures"] == 2 and after["replays"] - before["replays"] == 1


def test_a_failed_capture_leaves_that_size_eager_with_advice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from vllm.forward_context import BatchDescriptor

    import ascend_graph

    wrapper = _wrapper(monkeypatch, lambda x: x - 3, BatchDescriptor(num_tokens=4))

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(wrapper.device, "capture", out_of_memory)
    before = ascend_graph.counters()
    x = torch.randn(4)
    with caplog.at_level(logging.WARNING):
        assert torch.equal(wrapper(x), x - 3)
        assert torch.equal(wrapper(x), x - 3)  # eager from now on, still right
    after = ascend_graph.counters()
    assert after["capture_failures"] - before["capture_failures"] == 1
    assert after["eager_calls"] - before["eager_calls"] == 1
    assert "size 4 runs eagerly" in caplog.text and "cudagraph_capture_sizes" in caplog.text


def test_verify_passes_a_piece_that_updates_an_input_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """ASCEND_GRAPH_VERIFY=1: the capture is replayed against an eager run from the same inputs (restored between
    the two), so a residual updated in place is no false mismatch, and verifying leaves it as capture did."""
    from vllm.forward_context import BatchDescriptor

    import ascend_graph

    monkeypatch.setenv("ASCEND_GRAPH_VERIFY", "1")

    def piece(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        residual.add_(x)
        return residual * 2

    wrapper = _wrapper(monkeypatch, piece, BatchDescriptor(num_tokens=4))
    before = ascend_graph.counters()
    x, residual = torch.randn(4), torch.randn(4)
    wrapper(x, residual)
    after_capture = residual.clone()
    wrapper(x, residual)  # a replay
    after = ascend_graph.counters()
    assert after["verified_sizes"] - before["verified_sizes"] == 1
    assert after["verify_mismatches"] == before["verify_mismatches"]
    assert after["replays"] - before["replays"] == 1
    assert torch.allclose(residual, after_capture + x)


def test_verify_leaves_a_mismatching_capture_eager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A piece whose graph would not reproduce its eager result (here: it reads host state that changes at
    every call) is caught: that size runs eagerly, logged with the verifier's figures and advice."""
    from vllm.forward_context import BatchDescriptor

    import ascend_graph

    monkeypatch.setenv("ASCEND_GRAPH_VERIFY", "1")
    calls = [0]

    def piece(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return x + calls[0]

    wrapper = _wrapper(monkeypatch, piece, BatchDescriptor(num_tokens=4))
    before = ascend_graph.counters()
    x = torch.zeros(4)
    with caplog.at_level(logging.WARNING):
        first = wrapper(x)
        second = wrapper(x)
    after = ascend_graph.counters()
    assert after["verify_mismatches"] - before["verify_mismatches"] == 1
    assert after["replays"] == before["replays"] and after["eager_calls"] - before["eager_calls"] == 1
    assert torch.equal(first, torch.ones(4)) and torch.equal(second, x + calls[0])  # eager results
    assert "size 4 runs eagerly (verify_mismatch)" in caplog.text and "Graph replay disagrees with eager" in caplog.text
