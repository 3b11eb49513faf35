"""vLLM's static graph wrapper for ascend_graph: one captured graph per batch descriptor.

vLLM constructs one wrapper around each piece of the compiled model (on the CPU lane by default a single piece,
the whole model: see platform.py) and calls it inside a forward context that
names the runtime mode and the (padded) batch descriptor. The wrapper captures on the first call of a descriptor
and replays afterwards; outside graph mode it calls the piece directly. Like vLLM's CUDAGraphWrapper it owns no
input buffers and copies nothing in: a graph is kept per (batch descriptor, input addresses). vLLM's own path
keeps its buffers at stable addresses (one graph per descriptor); forward-async feeds two static input sets, so
each piece gets one graph per (descriptor, set) — copying set B's inputs into set A's addresses would write a
buffer the host may be filling for the next step (DESIGN.md §5 hazard 3).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.config import CUDAGraphMode
from vllm.forward_context import get_forward_context, is_forward_context_available
from vllm.logger import init_logger

from ..counters import bump
from ..device import get_device
from ..fallbacks import SizeFallback, capture_failure

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)

MAX_ADDRESS_SETS = 4  # forward-async uses 2; more means inputs moved, which vLLM's buffers never do


def _addresses(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...]:
    """The input addresses a graph is bound to (vLLM calls pieces positionally, the whole model by keyword)."""
    values = [*args, *(kwargs[name] for name in sorted(kwargs))]
    return tuple(value.data_ptr() for value in values if isinstance(value, torch.Tensor))


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
        self.eager_descriptors: dict[Any, SizeFallback] = {}  # capture failed: those run the piece eagerly
        self.capture_sizes = tuple(vllm_config.compilation_config.cudagraph_capture_sizes or ())
        bump("graph_wrappers")  # one per captured unit: 1 for whole-model graphs, one per piece otherwise

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
        if descriptor in self.eager_descriptors:
            bump("eager_calls")
            return self.runnable(*args, **kwargs)
        key = (descriptor, _addresses(args, kwargs))
        entry = self.entries.get(key)
        if entry is None:
            return self._capture(key, args, kwargs)
        entry.graph.replay()
        bump("replays")
        self.device.current_stream().synchronize()
        outputs = entry.graph.outputs
        return outputs if entry.returns_tuple else outputs[0]

    def _capture(self, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        variants = sum(1 for other in self.entries if other[0] == key[0])
        if variants >= MAX_ADDRESS_SETS:
            raise RuntimeError(
                f"ascend_graph: a piece saw {variants + 1} input address sets for {key[0]}; vLLM's input buffers are "
                f"expected at stable addresses (at most {MAX_ADDRESS_SETS} static sets)"
            )
        result = self.runnable(*args, **kwargs)  # warm-up, and the piece's output structure
        try:
            graph = self.device.capture(lambda *inputs: self.runnable(*inputs, **kwargs), args, self.pool)
        except RuntimeError as error:  # out of memory, device resources, a forbidden op: this size stays eager
            fallback = capture_failure(key[0].num_tokens, self.capture_sizes, error)
            self.eager_descriptors[key[0]] = fallback
            bump("capture_failures")
            logger.warning("%s", fallback.message())
            return result
        returns_tuple = isinstance(result, list | tuple)  # inductor-compiled pieces return lists
        self.entries[key] = _Entry(graph, args, returns_tuple)
        bump("captures")
        logger.debug("ascend_graph: captured a piece for %s", key[0])
        outputs = graph.outputs
        return outputs if returns_tuple else outputs[0]
