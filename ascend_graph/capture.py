"""Capturing one graph per size: static arguments, warm-up, capture into one shared pool, largest first."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .counters import Count, bump
from .device import DeviceGraph, GraphDevice
from .fallbacks import SizeFallback, capture_failure
from .signature import GraphSignature, InputKind, InputSpec

logger = logging.getLogger(__name__)


@dataclass
class Capture:
    """The result of capturing one size: the graph, the static arguments it reads, what it cost."""

    size: int | None
    graph: DeviceGraph
    args: tuple[Any, ...]
    # input index -> the static buffer of a DYNAMIC or COPIED input at this size
    buffers: dict[int, torch.Tensor] = field(default_factory=dict)
    capture_seconds: float = 0.0
    graph_bytes: int = 0
    # growth of the device allocator's reserved memory (the graph pool) during this capture: the largest size
    # pays for the pool, smaller sizes reuse it; 0 on the CPU, which has no pool
    pool_bytes: int = 0
    # bytes of the static input buffers and static outputs this size holds (on every device)
    static_bytes: int = 0
    # whether the captured callable returned a sequence (the caller unwraps a single output otherwise)
    returns_tuple: bool = True

    @property
    def outputs(self) -> tuple[Any, ...]:
        return self.graph.outputs


def pad_value_for(spec: InputSpec, pad_value: int, pad_values: dict[str, int]) -> int:
    return pad_values.get(spec.name, pad_value)


def static_args(
    signature: GraphSignature,
    example_inputs: Sequence[Any],
    size: int | None,
    pad_value: int,
    pad_values: dict[str, int],
) -> tuple[tuple[Any, ...], dict[int, torch.Tensor]]:
    """The arguments a capture at `size` reads: fresh static buffers for copied inputs (filled with pad values,
    so warm-up and capture write nowhere that matters), the caller's tensors for by-reference inputs."""
    args: list[Any] = []
    buffers: dict[int, torch.Tensor] = {}
    for spec, example in zip(signature.inputs, example_inputs, strict=True):
        if spec.kind is InputKind.DYNAMIC:
            buffer = torch.full(
                signature.input_sizes(spec, size),
                pad_value_for(spec, pad_value, pad_values),
                dtype=spec.dtype,
                device=spec.device,
            )
            buffers[spec.index] = buffer
            args.append(buffer)
        elif spec.kind is InputKind.COPIED:
            buffers[spec.index] = example.detach().clone()
            args.append(buffers[spec.index])
        elif spec.kind is InputKind.HOST_VALUE:
            args.append(example.detach().clone())
        elif spec.kind is InputKind.SYMINT:
            args.append(signature.input_sizes(spec, size)[0])
        else:
            args.append(example)
    return tuple(args), buffers


def capture_graph(
    runnable: Callable[..., Any],
    args: tuple[Any, ...],
    size: int | None,
    device: GraphDevice,
    pool: Any,
    buffers: dict[int, torch.Tensor] | None = None,
    stream: Any = None,
) -> Capture:
    """The capture step every engine uses (the standalone backend, the runner, vLLM's wrappers): capture
    `runnable(*args)` into `pool` (on `stream` where given) and account for it — seconds, allocator growth (the graph
    pool), static bytes. Warm-up is the caller's: vLLM's capture loop warms up itself."""
    buffers = buffers or {}
    before, reserved_before = device.memory_allocated(), device.memory_reserved()
    start = time.perf_counter()
    graph = device.capture(runnable, args, pool) if stream is None else device.capture(runnable, args, pool, stream)
    seconds = time.perf_counter() - start
    graph_bytes = max(device.memory_allocated() - before, getattr(graph, "nbytes", 0))
    pool_bytes = device.memory_reserved() - reserved_before
    static_bytes = sum(buffer.nbytes for buffer in buffers.values()) + sum(
        output.nbytes for output in graph.outputs if isinstance(output, torch.Tensor)
    )
    bump(Count.CAPTURES)
    logger.debug("captured size %s in %.3f s (%d bytes, pool +%d)", size, seconds, graph_bytes, pool_bytes)
    return Capture(size, graph, args, buffers, seconds, graph_bytes, pool_bytes, static_bytes)


def capture_one(
    runnable: Callable[..., Any],
    args: tuple[Any, ...],
    buffers: dict[int, torch.Tensor],
    size: int | None,
    device: GraphDevice,
    pool: Any,
    warmup_iters: int,
) -> Capture:
    """Warm up on a side stream (lazy initialisation must not be captured), then capture (`capture_graph`)."""
    side = device.new_stream()
    side.wait_stream(device.current_stream())
    with device.use_stream(side):
        for _ in range(warmup_iters):
            runnable(*args)
    device.current_stream().wait_stream(side)
    device.synchronize()
    # torch.cuda.graph empties the allocator cache on entry: do it first, so the reserved delta is the pool's growth
    device.release_cached()
    capture = capture_graph(runnable, args, size, device, pool, buffers)
    device.synchronize()
    return capture


def capture_all(
    runnable: Callable[..., Any],
    signature: GraphSignature,
    example_inputs: Sequence[Any],
    sizes: Sequence[int | None],
    device: GraphDevice,
    warmup_iters: int,
    pad_value: int,
    pad_values: dict[str, int],
    failures: dict[int | None, SizeFallback] | None = None,
) -> dict[int | None, Capture]:
    """One capture per size, largest first, all into one pool: smaller graphs reuse the largest one's memory.

    With `failures` given, a size whose static buffers, warm-up or capture raise anything (out of memory, device
    resources, an operation capture forbids, the model itself failing on padded inputs at that size) is recorded
    there with advice instead of raising; its buffers are dropped and the smaller sizes are still tried (they need
    less memory). Graph mode never fails a call for its own reasons."""
    pool = device.graph_pool()
    captures: dict[int | None, Capture] = {}
    ordered = tuple(sorted(sizes, key=lambda s: -1 if s is None else s, reverse=True))
    for size in ordered:
        try:
            args, buffers = static_args(signature, example_inputs, size, pad_value, pad_values)
            captures[size] = capture_one(runnable, args, buffers, size, device, pool, warmup_iters)
        except Exception as error:  # noqa: BLE001 - any failure leaves this size eager, logged and counted
            if failures is None:
                raise
            failures[size] = capture_failure(size, ordered, error, signature.batch_where)
            args = buffers = None  # the failed size's static state; the traceback goes with the except block
            _settle(device)
            bump(Count.CAPTURE_FAILURES)
    return captures


def _settle(device: GraphDevice) -> None:
    """Wait for the failed capture's queued work, ignoring the error it re-raises (already recorded)."""
    try:
        device.synchronize()
    except Exception:  # noqa: BLE001
        logger.debug("device error after a failed capture, already recorded", exc_info=True)
