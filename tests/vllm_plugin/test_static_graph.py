"""vLLM's static graph wrapper of ascend_graph without an engine: capture, replay, one graph per static set, no
address read and no lock on the replay path (addresses checked in debug mode only), vLLM's offloader and graph-pool
safeguards around a capture, and a failed capture that leaves that batch size eager with advice."""

from __future__ import annotations

import importlib
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
    from ascend_graph.staging import using_static_set

    wrapper = _wrapper(monkeypatch, lambda x: x * 2 + 1, BatchDescriptor(num_tokens=4))
    before = ascend_graph.counters()
    a, b = torch.randn(4), torch.randn(4)
    assert torch.equal(wrapper(a), a * 2 + 1)  # capture for set 0
    a.copy_(torch.randn(4))
    assert torch.equal(wrapper(a), a * 2 + 1)  # replay reads a's new values
    with using_static_set(1):
        assert torch.equal(wrapper(b), b * 2 + 1)  # set 1: its own graph, nothing copied into a's
        b.copy_(torch.randn(4))
        assert torch.equal(wrapper(b), b * 2 + 1)  # replay of set 1's graph reads b
    a.copy_(torch.randn(4))
    assert torch.equal(wrapper(a), a * 2 + 1)  # back to set 0: a's graph
    after = ascend_graph.counters()
    assert after["captures"] - before["captures"] == 2 and after["replays"] - before["replays"] == 3


class _CountingLock:
    def __init__(self) -> None:
        self.entered = 0

    def __enter__(self) -> None:
        self.entered += 1

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_replay_path_reads_no_address_and_takes_no_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 5: a replay looks its graph up by (descriptor, static set); it reads no `data_ptr()` of its
    arguments (weights included) and takes no lock (counting is per thread). Outside debug mode a moved input is
    not looked at, as in vLLM."""
    from vllm.forward_context import BatchDescriptor

    counters_module = importlib.import_module("ascend_graph.counters")

    weights = [torch.randn(4) for _ in range(8)]
    wrapper = _wrapper(monkeypatch, lambda x, *ws: x + sum(ws), BatchDescriptor(num_tokens=4))
    x = torch.randn(4)
    wrapper(x, *weights)  # capture
    reads, lock = [0], _CountingLock()
    real_data_ptr = torch.Tensor.data_ptr

    def counted(tensor: torch.Tensor) -> int:
        reads[0] += 1
        return real_data_ptr(tensor)

    monkeypatch.setattr(torch.Tensor, "data_ptr", counted)
    monkeypatch.setattr(counters_module._COUNTERS, "_lock", lock)
    for _ in range(3):
        assert torch.allclose(wrapper(x, *weights), x + sum(weights))
    assert reads[0] == 0 and lock.entered == 0


def test_debug_mode_checks_input_addresses_and_names_the_moved_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """ASCEND_GRAPH_DEBUG=1 (or vLLM's DEBUG logging): a replay whose inputs are not where its capture's were raises
    a named error instead of reading the old addresses (before: a new graph was captured without a word)."""
    from vllm.forward_context import BatchDescriptor

    from ascend_graph.errors import StaticInputMovedError

    monkeypatch.setenv("ASCEND_GRAPH_DEBUG", "1")
    wrapper = _wrapper(monkeypatch, lambda x, w: x * w, BatchDescriptor(num_tokens=4))
    x, w = torch.randn(4), torch.randn(4)
    wrapper(x, w)
    assert torch.equal(wrapper(x, w), x * w)  # same addresses: replays
    with pytest.raises(StaticInputMovedError, match=r"static set 0\).*tensor inputs \[1\] of 2 moved"):
        wrapper(x, w.clone())


def test_capture_and_replay_keep_vllms_offloader_and_graph_pool_safeguards(monkeypatch: pytest.MonkeyPatch) -> None:
    """As vLLM's CUDAGraphWrapper: the NCCL symmetric-memory allocator is pointed at the graph pool and the offloader
    synced before a capture, its copy stream joined inside the graph after the forward; synced before a replay."""
    from vllm.forward_context import BatchDescriptor

    from ascend_graph.vllm_plugin import static_graph

    log: list[str] = []
    offloader = SimpleNamespace(
        sync_prev_onload=lambda: log.append("sync"), join_after_forward=lambda: log.append("join")
    )
    monkeypatch.setattr(static_graph, "get_offloader", lambda: offloader, raising=False)
    monkeypatch.setattr(static_graph, "set_graph_pool_id", lambda pool: log.append(f"pool id {pool}"), raising=False)

    def piece(x: torch.Tensor) -> torch.Tensor:
        log.append("piece")
        return x + 1

    wrapper = _wrapper(monkeypatch, piece, BatchDescriptor(num_tokens=4))
    wrapper.pool = "the global pool"  # an accelerator's (the CPU has none)
    x = torch.randn(4)
    wrapper(x)
    assert log == ["piece", "pool id the global pool", "sync", "piece", "join"]  # warm-up, then the capture
    log.clear()
    wrapper(x)
    # the replay: synced first; on the CPU a replay re-runs the captured function (the join with it)
    assert log == ["sync", "piece", "join"]


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
