"""vLLM's static graph wrapper for ascend_graph: one captured graph per batch descriptor, PIECEWISE mode.

vLLM constructs one wrapper around each piece between attention ops and calls it inside a forward context that
names the runtime mode and the (padded) batch descriptor. The wrapper captures on the first call of a descriptor
and replays afterwards; outside graph mode it calls the piece directly. Like vLLM's CUDAGraphWrapper it owns no
buffers: vLLM keeps inputs at stable addresses; an input found at another address is copied into the captured one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from vllm.config import CUDAGraphMode
from vllm.forward_context import get_forward_context, is_forward_context_available

from ..counters import bump
from ..device import get_device

logger = logging.getLogger(__name__)


class _Entry:
    def __init__(self, graph: Any, args: tuple[Any, ...], returns_tuple: bool) -> None:
        self.graph, self.args, self.returns_tuple = graph, args, returns_tuple


class AscendGraphStaticWrapper:
    def __init__(self, runnable: Any, vllm_config: Any, runtime_mode: CUDAGraphMode, **kwargs: Any) -> None:
        self.runnable = runnable
        self.runtime_mode = runtime_mode
        self.device = get_device("cpu")
        self.pool = self.device.graph_pool()
        self.entries: dict[Any, _Entry] = {}

    def unwrap(self) -> Any:
        return self.runnable

    def __getattr__(self, name: str) -> Any:
        runnable = self.__dict__.get("runnable")
        if runnable is None:
            raise AttributeError(name)
        return getattr(runnable, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not is_forward_context_available():
            return self.runnable(*args, **kwargs)
        context = get_forward_context()
        mode, descriptor = context.cudagraph_runtime_mode, context.batch_descriptor
        if mode == CUDAGraphMode.NONE or mode != self.runtime_mode or descriptor is None:
            return self.runnable(*args, **kwargs)
        entry = self.entries.get(descriptor)
        if entry is None:
            return self._capture(descriptor, args, kwargs)
        for captured, value in zip(entry.args, args, strict=True):
            if isinstance(value, torch.Tensor) and value.data_ptr() != captured.data_ptr():
                self.device.copy_(captured, value)
        entry.graph.replay()
        bump("replays")
        self.device.current_stream().synchronize()
        outputs = entry.graph.outputs
        return outputs if entry.returns_tuple else outputs[0]

    def _capture(self, descriptor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = self.runnable(*args, **kwargs)  # warm-up, and the piece's output structure
        graph = self.device.capture(lambda *inputs: self.runnable(*inputs, **kwargs), args, self.pool)
        self.entries[descriptor] = _Entry(graph, args, isinstance(result, tuple))
        bump("captures")
        logger.debug("ascend_graph: captured a piece for %s", descriptor)
        outputs = graph.outputs
        return outputs if isinstance(result, tuple) else outputs[0]
