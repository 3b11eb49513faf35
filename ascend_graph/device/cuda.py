"""CUDA device: torch's own CUDA graphs, streams and events, unchanged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class CudaGraph:
    graph: torch.cuda.CUDAGraph
    outputs: tuple[Any, ...]

    def replay(self) -> None:
        self.graph.replay()


class CudaDevice:
    kind = "cuda"
    host_reads_outputs = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device())

    def is_available(self) -> bool:
        return torch.cuda.is_available()

    def new_stream(self) -> torch.cuda.Stream:
        return torch.cuda.Stream()

    def current_stream(self) -> torch.cuda.Stream:
        return torch.cuda.current_stream()

    def use_stream(self, stream: torch.cuda.Stream) -> AbstractContextManager[Any]:
        return torch.cuda.stream(stream)

    def new_event(self, timing: bool = False) -> torch.cuda.Event:
        return torch.cuda.Event(enable_timing=timing)

    def graph_pool(self) -> Any:
        return torch.cuda.graph_pool_handle()

    def capture(self, fn: Callable[..., Any], args: Sequence[Any], pool: Any, stream: Any = None) -> CudaGraph:
        """Capture `fn(*args)`; `stream` None captures on torch's own side stream, else on `stream` (vLLM captures on
        the stream its `graph_capture` context made current, which its collectives also use)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, stream=stream):
            results = fn(*args)
        outputs = tuple(results) if isinstance(results, list | tuple) else (results,)
        return CudaGraph(graph, outputs)

    def copy_(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src, non_blocking=True)

    def fill_(self, dst: torch.Tensor, value: float) -> None:
        dst.fill_(value)

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def pinned_empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type != "cpu" or tensor.is_pinned()

    def memory_allocated(self) -> int:
        return torch.cuda.memory_allocated()

    def memory_reserved(self) -> int:
        return torch.cuda.memory_reserved()

    def release_cached(self) -> None:
        torch.cuda.empty_cache()
