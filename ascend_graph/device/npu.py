"""Ascend NPU device through torch_npu: NPUGraph (ACL graph) capture and replay.

UNVERIFIED ON HARDWARE. No Ascend NPU exists in this project's reach; this file is written against the public
torch_npu API (`torch.npu.NPUGraph`, `torch.npu.graph`, `torch.npu.graph_pool_handle`, `torch.npu.Stream`,
`torch.npu.Event`), which mirrors `torch.cuda`. It has never run. Keep it thin: anything beyond the mirrored
surface belongs behind a test on real hardware.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DeviceUnavailableError


def _npu() -> Any:
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ImportError as error:
        raise DeviceUnavailableError(
            "device='npu' needs torch_npu (pip install 'ascend-graph[npu]' on an Ascend host)"
        ) from error
    return torch.npu  # type: ignore[attr-defined]


@dataclass
class NpuGraph:
    # The annotations name torch_npu's classes (strings at run time): the conformance check
    # (ascend_graph.conformance) follows them to check the methods called on these objects.
    graph: torch.npu.NPUGraph
    outputs: tuple[Any, ...]

    def replay(self) -> None:
        self.graph.replay()


class NpuDevice:
    kind = "npu"
    host_reads_outputs = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device("npu", _npu().current_device())

    def is_available(self) -> bool:
        try:
            return bool(_npu().is_available())
        except DeviceUnavailableError:
            return False

    def new_stream(self) -> torch.npu.Stream:
        return _npu().Stream()

    def current_stream(self) -> torch.npu.Stream:
        return _npu().current_stream()

    def use_stream(self, stream: torch.npu.Stream) -> AbstractContextManager[Any]:
        return _npu().stream(stream)

    def new_event(self, timing: bool = False) -> torch.npu.Event:
        return _npu().Event(enable_timing=timing)

    def graph_pool(self) -> Any:
        return _npu().graph_pool_handle()

    def capture(self, fn: Callable[..., Any], args: Sequence[Any], pool: Any, stream: Any = None) -> NpuGraph:
        npu = _npu()
        graph = npu.NPUGraph()
        with npu.graph(graph, pool=pool, stream=stream):
            results = fn(*args)
        outputs = tuple(results) if isinstance(results, list | tuple) else (results,)
        return NpuGraph(graph, outputs)

    def copy_(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src, non_blocking=True)

    def fill_(self, dst: torch.Tensor, value: float) -> None:
        dst.fill_(value)

    def synchronize(self) -> None:
        _npu().synchronize()

    def pinned_empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type != "cpu" or tensor.is_pinned()

    def memory_allocated(self) -> int:
        return int(_npu().memory_allocated())

    def memory_reserved(self) -> int:
        return int(_npu().memory_reserved())

    def release_cached(self) -> None:
        _npu().empty_cache()
