"""The CPU device behaves like a device graph: static addresses, replay asynchronous to the host, reading the
static inputs when it runs. Blocking the stream with a host gate makes the ordering deterministic, no timing."""

from __future__ import annotations

import threading

import pytest
import torch

from ascend_graph.device import get_device
from ascend_graph.errors import StreamError


def _blocked_stream_gate() -> threading.Event:
    gate = threading.Event()
    get_device("cpu").current_stream().submit(gate.wait)  # like a long kernel ahead in the stream
    return gate


def test_replay_returns_before_it_runs_and_reads_inputs_when_it_runs() -> None:
    device = get_device("cpu")
    static_in = torch.zeros(4)
    graph = device.capture(lambda x: x * 2 + 1, (static_in,), device.graph_pool())
    (static_out,) = graph.outputs
    address = static_out.data_ptr()
    static_out.fill_(float("nan"))

    gate = _blocked_stream_gate()
    graph.replay()
    done = device.new_event()
    done.record()
    assert not done.query(), "replay ran synchronously on the host"
    assert torch.isnan(static_out).all(), "output written before the stream reached the replay"
    static_in.fill_(3.0)  # the host rewrites the input after replay() returned: hazard 3 of docs/design.md
    gate.set()
    done.synchronize()
    assert torch.equal(static_out, torch.full((4,), 7.0)), "replay must read the input's contents at run time"
    assert static_out.data_ptr() == address


def test_next_replay_overwrites_outputs() -> None:
    device = get_device("cpu")
    static_in = torch.arange(3.0)
    graph = device.capture(lambda x: x.square(), (static_in,), None)
    (out,) = graph.outputs
    graph.replay()
    device.synchronize()
    first = out.clone()
    static_in.add_(1)
    graph.replay()
    device.synchronize()
    assert torch.equal(first, torch.tensor([0.0, 1.0, 4.0]))
    assert torch.equal(out, torch.tensor([1.0, 4.0, 9.0]))


def test_wait_event_orders_two_streams() -> None:
    device = get_device("cpu")
    producer, consumer = device.new_stream(), device.new_stream()
    data = torch.zeros(1)
    seen: list[float] = []
    gate = threading.Event()
    producer.submit(gate.wait)
    producer.submit(lambda: data.fill_(5.0))
    ready = device.new_event()
    ready.record(producer)
    consumer.wait_event(ready)
    consumer.submit(lambda: seen.append(float(data)))
    gate.set()
    consumer.synchronize()
    assert seen == [5.0]


def test_unrecorded_event_is_complete_like_cuda() -> None:
    event = get_device("cpu").new_event()
    assert event.query()
    event.synchronize()


def test_error_on_stream_is_raised_at_synchronize_and_stream_survives() -> None:
    device = get_device("cpu")
    stream = device.new_stream()

    def fail() -> None:
        raise RuntimeError("kernel failed")

    stream.submit(fail)
    with pytest.raises(StreamError, match="kernel failed"):
        stream.synchronize()
    values: list[int] = []
    stream.submit(lambda: values.append(1))
    stream.synchronize()
    assert values == [1]


def test_stream_work_runs_in_submitter_inference_mode() -> None:
    device = get_device("cpu")
    with torch.inference_mode():
        buffer = torch.zeros(2)  # an inference tensor: in-place outside inference mode would raise
        device.copy_(buffer, torch.ones(2))
        device.synchronize()
    assert torch.equal(buffer, torch.ones(2))


def test_use_stream_switches_current_stream() -> None:
    device = get_device("cpu")
    side = device.new_stream()
    with device.use_stream(side):
        assert device.current_stream() is side
    assert device.current_stream() is not side
