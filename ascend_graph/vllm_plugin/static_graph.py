"""vLLM's static graph wrapper for ascend_graph: one captured graph per batch descriptor and static input set.

vLLM constructs one wrapper around each piece of the compiled model (PIECEWISE: one per piece between attention
ops; on the CPU lane's FULL mode the whole model, see platform.py) and calls it inside a forward context that names
the runtime mode and the (padded) batch descriptor. The wrapper captures on the first call of a descriptor through
the device layer (`capture.capture_graph`, the one capture step of the project) into the platform's global graph
pool, and replays afterwards; outside graph mode it calls the piece directly.

What it deliberately does not do: like vLLM's CUDAGraphWrapper it owns no input buffers and copies nothing in. A
graph is kept per (batch descriptor, input addresses): vLLM's own path keeps its buffers at stable addresses (one
graph per descriptor); forward-async feeds two static input sets, so each piece gets one graph per (descriptor,
set) — copying set B's inputs into set A's addresses would write a buffer that the host or the device may be
filling for the next step (docs/design.md, hazard 3).

On an accelerator (CUDA, NPU) it captures only while the model runner's capture window is open (vLLM's
`cudagraph_capturing_enabled`, set by the runner around `capture_model`); a descriptor first seen later runs
eagerly, logged once and counted. Graph outputs are kept as weak references there, as vLLM does, so that every
graph of the pool can reuse the memory of the others. On the CPU lane replay is asynchronous on the CPU stream and
the wrapper waits for it before handing outputs to vLLM (host code reads them directly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from vllm.compilation import monitor
from vllm.config import CUDAGraphMode
from vllm.forward_context import get_forward_context, is_forward_context_available
from vllm.logger import init_logger

from ..capture import Capture, capture_graph
from ..counters import Count, bump
from ..device import get_device
from ..fallbacks import SizeFallback, capture_failure, verify_mismatch
from ..verify import VerifyResult, compare_outputs
from .options import options_of

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)

MAX_STATIC_SETS = 4  # forward-async uses 2; more means inputs moved, which vLLM's buffers never do


def _addresses(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...]:
    """The input addresses a graph is bound to (vLLM calls pieces positionally, the whole model by keyword)."""
    values = [*args, *(kwargs[name] for name in sorted(kwargs))]
    return tuple(value.data_ptr() for value in values if isinstance(value, torch.Tensor))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def platform_graph_pool(device_kind: str) -> Any:
    """The pool every graph of this process shares: vLLM's global pool on accelerators (its FULL graphs and ours
    reuse one another's memory), none on the CPU."""
    if device_kind == "cpu":
        return None
    from vllm.platforms import current_platform

    return current_platform.get_global_graph_pool()


@contextlib.contextmanager
def _keep_allocator_cache() -> Iterator[None]:
    """torch.cuda.graph empties the allocator cache (and may collect garbage) on entry; for every piece after the
    first of a forward, vLLM asks not to (`CUDAGraphOptions.gc_disable`): capturing ~30 pieces per size stays fast."""
    with mock.patch("gc.collect", lambda *args, **kwargs: 0), mock.patch("torch.cuda.empty_cache", lambda: None):
        yield


class AscendGraphStaticWrapper:
    def __new__(cls, runnable: Any, vllm_config: Any, *args: Any, **kwargs: Any) -> Any:
        """Where ascend_graph was not asked for, or `graph_runner: "vllm"` (the baseline) was, the host platform's own
        wrapper (vLLM's CUDAGraphWrapper)."""
        options = options_of(vllm_config)
        if not (options.enabled and options.own_runner):
            from vllm.platforms import current_platform
            from vllm.utils.import_utils import resolve_obj_by_qualname

            host = resolve_obj_by_qualname(current_platform.host_static_graph_wrapper_cls())
            return host(runnable, vllm_config, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self, runnable: Any, vllm_config: Any, runtime_mode: CUDAGraphMode, cudagraph_options: Any = None
    ) -> None:
        from vllm.platforms import current_platform

        self.runnable = runnable
        self.runtime_mode = runtime_mode
        self.device = get_device(current_platform.device_type)
        self.pool = platform_graph_pool(self.device.kind)
        self.weak_outputs = self.device.kind != "cpu"
        self.keep_cache = self.device.kind != "cpu" and bool(getattr(cudagraph_options, "gc_disable", False))
        self.captures: dict[Any, Capture] = {}
        self.eager_descriptors: dict[Any, SizeFallback] = {}  # capture failed or came too late: served eagerly
        self.capture_sizes = tuple(vllm_config.compilation_config.cudagraph_capture_sizes or ())
        self.verify = options_of(vllm_config).verify_requested
        bump(Count.GRAPH_WRAPPERS)  # one per captured unit: 1 for whole-model graphs, one per piece otherwise

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
            bump(Count.EAGER_CALLS)
            return self.runnable(*args, **kwargs)
        key = (descriptor, _addresses(args, kwargs))
        capture = self.captures.get(key)
        if capture is None:
            return self._capture(key, args, kwargs)
        capture.graph.replay()
        bump(Count.REPLAYS)
        if self.device.host_reads_outputs:
            self.device.current_stream().synchronize()
        outputs = capture.outputs
        return outputs if capture.returns_tuple else outputs[0]

    def _capture(self, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        descriptor = key[0]
        variants = sum(1 for other in self.captures if other[0] == descriptor)
        late = self.device.kind != "cpu" and not monitor.cudagraph_capturing_enabled
        if variants >= MAX_STATIC_SETS or late:
            why = (
                f"a graph was asked for after start-up capture ended (input addresses {len(key[1])} tensors)"
                if late
                else f"{variants + 1} static input sets (at most {MAX_STATIC_SETS} are captured)"
            )
            return self._eager(descriptor, RuntimeError(why), args, kwargs)
        result = self.runnable(*args, **kwargs)  # warm-up, and the piece's output structure
        try:
            with _keep_allocator_cache() if self.keep_cache else contextlib.nullcontext():
                capture = capture_graph(
                    lambda *inputs: self.runnable(*inputs, **kwargs),
                    args,
                    getattr(descriptor, "num_tokens", None),
                    self.device,
                    self.pool,
                    stream=None if self.device.kind == "cpu" else self.device.current_stream(),
                )
        except Exception as error:  # noqa: BLE001 - any capture failure leaves this descriptor eager, logged
            return self._eager(descriptor, error, args, kwargs, result)
        capture.returns_tuple = isinstance(result, list | tuple)  # inductor-compiled pieces return lists
        if self.verify:
            checked = self._verify(capture, args, kwargs)
            bump(Count.VERIFIED_SIZES if checked.ok else Count.VERIFY_MISMATCHES)
            if not checked.ok:
                fallback = verify_mismatch(getattr(descriptor, "num_tokens", None), checked.message())
                return self._eager(descriptor, None, args, kwargs, result, fallback)
        outputs = capture.outputs
        if self.weak_outputs:
            from vllm.utils.torch_utils import weak_ref_tensors

            capture.graph.outputs = tuple(weak_ref_tensors(list(outputs)))
        self.captures[key] = capture
        logger.debug("ascend_graph: captured a piece for %s", descriptor)
        # The static outputs, not the warm-up's: the next piece is captured reading them, so that at replay it
        # reads what this graph writes (on the CPU they also hold this call's values: the capture ran the piece).
        return outputs if capture.returns_tuple else outputs[0]

    def _verify(self, capture: Capture, args: tuple[Any, ...], kwargs: dict[str, Any]) -> VerifyResult:
        """The new graph replayed against the piece run eagerly, both from the inputs as they are now. Inputs the
        piece writes (a residual updated in place) are restored after each run, so that verifying leaves them as
        the capture did."""
        saved = [arg.clone() if isinstance(arg, torch.Tensor) else None for arg in args]

        def restore() -> None:
            for arg, copy in zip(args, saved, strict=True):
                if copy is not None:
                    arg.copy_(copy)

        eager = _as_tuple(self.runnable(*args, **kwargs))
        expected = [out.clone() if isinstance(out, torch.Tensor) else out for out in eager]
        restore()
        capture.graph.replay()
        self.device.synchronize()
        restore()
        return compare_outputs(capture.outputs, expected, capture.size, {})

    def _eager(
        self,
        descriptor: Any,
        error: BaseException | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any = None,
        fallback: SizeFallback | None = None,
    ) -> Any:
        """This descriptor runs eagerly from now on: its capture raised `error`, or came too late, or `fallback`
        says why (a verification mismatch)."""
        if fallback is None:
            assert error is not None
            fallback = capture_failure(getattr(descriptor, "num_tokens", None), self.capture_sizes, error)
            bump(Count.CAPTURE_FAILURES)
        self.eager_descriptors[descriptor] = fallback
        logger.warning("%s", fallback.message())
        return self.runnable(*args, **kwargs) if result is None else result
