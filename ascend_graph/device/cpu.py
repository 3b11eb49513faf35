"""CPU device: real graph semantics, really asynchronous.

A `CpuStream` is a FIFO of work run by one worker thread, the CPU's stand-in for a device stream; `CpuEvent`
marks a point in it. A `CpuGraph` is captured once and then behaves like a device graph:

- its static inputs and outputs keep their addresses for the life of the graph;
- `replay()` only enqueues work and returns at once; the work reads the static inputs' contents when it runs,
  not when `replay()` was called, and overwrites the static outputs;
- so a host that rewrites a static input before the replay has run, or reads an output before waiting for the
  replay's event, gets wrong numbers, exactly as on a GPU. That is the point: double-buffering bugs show up in
  CI, which has no accelerator.

What it deliberately does not do: record individual kernels. The "graph" is the captured callable itself, whose
Python control flow is fixed at capture (a dynamo graph has none that depends on data).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ..errors import StreamError


class CpuEvent:
    """A marker in a `CpuStream`. Like a CUDA event, an event never recorded counts as complete."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._done.set()
        self._stamp = 0.0

    def record(self, stream: CpuStream | None = None) -> None:
        stream = stream if stream is not None else CPU_DEVICE.current_stream()
        done = threading.Event()
        self._done = done

        def fire() -> None:
            self._stamp = time.perf_counter()
            done.set()

        stream.submit(fire)

    def elapsed_time(self, end: CpuEvent) -> float:
        """Milliseconds between this event's and `end`'s firing on their streams (like cudaEventElapsedTime)."""
        self.synchronize()
        end.synchronize()
        return (end._stamp - self._stamp) * 1e3

    def synchronize(self) -> None:
        self._done.wait()

    def query(self) -> bool:
        return self._done.is_set()

    def _snapshot(self) -> threading.Event:
        return self._done


class CpuStream:
    """Work items run in submission order on one daemon thread.

    Each item runs under the grad and inference mode of the thread that submitted it (those modes are
    thread-local in torch). An exception inside an item is kept and re-raised as `StreamError` at the next
    `synchronize()` or `submit()`; later items still run, so events still fire and nobody hangs.

    Work submitted from the stream's own thread (a device job that replays graphs, copies, records events) runs
    inline, in order, as kernels launched by one job would; `synchronize()` there returns at once, since
    everything queued before the running item has already run.
    """

    def __init__(self, name: str = "ascend-graph-cpu-stream") -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                item()
            except BaseException as error:  # noqa: BLE001 - kept and re-raised on the host
                if self._error is None:
                    self._error = error

    def _raise_pending(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise StreamError(f"work queued on {self._thread.name} failed: {error!r}") from error

    def on_stream_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], Any]) -> None:
        """Enqueue `fn`; it runs after everything submitted before it (inline on the stream's own thread)."""
        if self.on_stream_thread():
            fn()
            return
        self._raise_pending()
        grad_enabled = torch.is_grad_enabled()
        inference = torch.is_inference_mode_enabled()

        def item() -> None:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad_enabled):
                fn()

        self._queue.put(item)

    def wait_event(self, event: CpuEvent) -> None:
        # Like cudaStreamWaitEvent: waits for the event's most recent record as of this call.
        self.submit(event._snapshot().wait)

    def wait_stream(self, stream: CpuStream) -> None:
        event = CpuEvent()
        event.record(stream)
        self.wait_event(event)

    def synchronize(self) -> None:
        if self.on_stream_thread():
            return
        event = CpuEvent()
        event.record(self)
        event.synchronize()
        self._raise_pending()


class CpuGraph:
    """A captured callable with static inputs and outputs; `replay()` enqueues it on the current stream."""

    def __init__(self, fn: Callable[..., Any], args: Sequence[Any], outputs: tuple[Any, ...]) -> None:
        self._fn = fn
        self._args = tuple(args)
        self.outputs = outputs
        self.nbytes = sum(out.nbytes for out in outputs if isinstance(out, torch.Tensor))

    def _run(self) -> None:
        results = _as_tuple(self._fn(*self._args))
        for static, result in zip(self.outputs, results, strict=True):
            if isinstance(static, torch.Tensor):
                static.copy_(result)

    def replay(self) -> None:
        CPU_DEVICE.current_stream().submit(self._run)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


class CpuDevice:
    kind = "cpu"
    host_reads_outputs = True

    def __init__(self) -> None:
        self._default_stream: CpuStream | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pinned: set[int] = set()

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_available(self) -> bool:
        return True

    def new_stream(self) -> CpuStream:
        return CpuStream()

    def default_stream(self) -> CpuStream:
        with self._lock:
            if self._default_stream is None:
                self._default_stream = CpuStream("ascend-graph-cpu-default-stream")
            return self._default_stream

    def current_stream(self) -> CpuStream:
        stack = getattr(self._local, "streams", None)
        return stack[-1] if stack else self.default_stream()

    @contextlib.contextmanager
    def use_stream(self, stream: CpuStream) -> Iterator[CpuStream]:
        stack = self._local.__dict__.setdefault("streams", [])
        stack.append(stream)
        try:
            yield stream
        finally:
            stack.pop()

    def new_event(self, timing: bool = False) -> CpuEvent:
        return CpuEvent()  # CPU events always carry a timestamp

    def graph_pool(self) -> None:
        return None  # host memory has no graph pool; static buffers are plain tensors

    def capture(self, fn: Callable[..., Any], args: Sequence[Any], pool: Any, stream: Any = None) -> CpuGraph:
        """Run `fn` once now (the capture run) and keep fresh static copies of its outputs."""
        self.current_stream().synchronize()
        results = _as_tuple(fn(*args))
        outputs = tuple(out.clone() if isinstance(out, torch.Tensor) else out for out in results)
        return CpuGraph(fn, args, outputs)

    def copy_(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        self.current_stream().submit(lambda: dst.copy_(src))

    def fill_(self, dst: torch.Tensor, value: float) -> None:
        self.current_stream().submit(lambda: dst.fill_(value))

    def synchronize(self) -> None:
        self.current_stream().synchronize()
        if self._default_stream is not None:
            self._default_stream.synchronize()

    def pinned_empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """Host memory stands for pinned memory here; it is remembered, so the silent-sync detector can tell an
        unpinned source from a pinned one as it would on a device."""
        tensor = torch.empty(tuple(shape), dtype=dtype)
        self._pinned.add(tensor.untyped_storage().data_ptr())
        return tensor

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return tensor.untyped_storage().data_ptr() in self._pinned

    def memory_allocated(self) -> int:
        return 0

    def release_cached(self) -> None:
        return None

    def memory_reserved(self) -> int:
        return 0  # no allocator pool: a CPU graph's memory is its static buffers and outputs (Capture.static_bytes)


CPU_DEVICE = CpuDevice()
