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
    config = SimpleNamespace(compilation_config=SimpleNamespace(cudagraph_capture_sizes=[1, 2, 4]))
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
