"""The accelerator device: one class for CUDA and for Ascend NPUs, over torch's device module for the kind.

torch_npu mirrors `torch.cuda` as `torch.npu` (streams, events, `graph`, `graph_pool_handle`, memory figures), so
the two kinds differ in the module and the graph class only (`torch.cuda.CUDAGraph`, `torch.npu.NPUGraph`): the
two factories at the bottom name them.

The NPU kind is UNVERIFIED ON HARDWARE: no Ascend NPU exists in this project's reach. Its calls are checked
against torch_npu's sources (ascend_graph.conformance, docs/ascend-conformance.md): the `api` and `graph_class`
fields carry the torch_npu names in their annotations for that check, since it cannot follow a module chosen at
run time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import ModuleType
from typing import Annotated, Any

import torch

from ..errors import DeviceUnavailableError


@dataclass
class AcceleratorGraph:
    graph: torch.cuda.CUDAGraph | torch.npu.NPUGraph
    outputs: tuple[Any, ...]

    def replay(self) -> None:
        self.graph.replay()


@dataclass
class AcceleratorDevice:
    kind: str
    # torch.cuda or torch.npu; the metadata names what the Ascend conformance check reads these fields as
    api: Annotated[ModuleType, "torch.npu"]
    graph_class: Annotated[type, "torch.npu.NPUGraph"]
    host_reads_outputs = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.kind, self.api.current_device())

    def is_available(self) -> bool:
        return bool(self.api.is_available())

    def new_stream(self) -> torch.cuda.Stream | torch.npu.Stream:
        return self.api.Stream()

    def current_stream(self) -> torch.cuda.Stream | torch.npu.Stream:
        return self.api.current_stream()

    def use_stream(self, stream: Any) -> AbstractContextManager[Any]:
        return self.api.stream(stream)

    def new_event(self, timing: bool = False) -> torch.cuda.Event | torch.npu.Event:
        return self.api.Event(enable_timing=timing)

    def graph_pool(self) -> Any:
        return self.api.graph_pool_handle()

    def capture(self, fn: Callable[..., Any], args: Sequence[Any], pool: Any, stream: Any = None) -> AcceleratorGraph:
        """Capture `fn(*args)`; `stream` None captures on torch's own side stream, else on `stream` (vLLM captures on
        the stream its `graph_capture` context made current, which its collectives also use)."""
        graph = self.graph_class()
        with self.api.graph(graph, pool=pool, stream=stream):
            results = fn(*args)
        outputs = tuple(results) if isinstance(results, list | tuple) else (results,)
        return AcceleratorGraph(graph, outputs)

    def copy_(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src, non_blocking=True)

    def fill_(self, dst: torch.Tensor, value: float) -> None:
        dst.fill_(value)

    def synchronize(self) -> None:
        self.api.synchronize()

    def pinned_empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)

    def is_pinned(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type != "cpu" or tensor.is_pinned()

    def memory_allocated(self) -> int:
        return int(self.api.memory_allocated())

    def memory_reserved(self) -> int:
        return int(self.api.memory_reserved())

    def release_cached(self) -> None:
        self.api.empty_cache()


def cuda_device() -> AcceleratorDevice:
    return AcceleratorDevice("cuda", torch.cuda, torch.cuda.CUDAGraph)


def npu_device() -> AcceleratorDevice:
    """Raises DeviceUnavailableError without torch_npu (it registers `torch.npu` when imported)."""
    try:
        import torch_npu  # noqa: F401
    except ImportError as error:
        raise DeviceUnavailableError(
            "device='npu' needs torch_npu (pip install 'ascend-graph[npu]' on an Ascend host)"
        ) from error
    npu = torch.npu  # type: ignore[attr-defined]
    return AcceleratorDevice("npu", npu, npu.NPUGraph)
