"""vLLM's static graph wrapper for ascend_graph: one captured graph per batch descriptor and static input set.

vLLM constructs one wrapper around each piece of the compiled model (PIECEWISE: one per piece between attention
ops; on the CPU lane's FULL mode the whole model, see platform.py) and calls it inside a forward context that names
the runtime mode and the (padded) batch descriptor. The wrapper captures on the first call of a descriptor through
the device layer (`capture.capture_graph`, the one capture step of the project) into the platform's global graph
pool, and replays afterwards; outside graph mode it calls the piece directly.

What it deliberately does not do: like vLLM's CUDAGraphWrapper it owns no input buffers, copies nothing in and
reads no input address on the replay path. A graph is kept per (batch descriptor, static set): the set is the label
the engine names for the step (`staging.static_set_in_use`; 0, the host's own buffers, unless a ring of static sets
is in use: the CPU lane's forward-async, Ascend's), so that each set's inputs are read by the graph captured on
them — copying set B's inputs into set A's addresses would write a buffer that the host or the device may be
filling for the next step (docs/design.md, hazard 3). Input addresses are checked against the capture's only in
debug mode (ascend_graph's `debug` option, ASCEND_GRAPH_DEBUG=1, or vLLM's DEBUG logging, as vLLM checks them),
where a moved input raises `StaticInputMovedError`.

As vLLM's wrapper does, it syncs the weight offloader's prefetches before a capture and a replay and joins its copy
stream inside the capture, and points NCCL's symmetric-memory allocator at the graph pool while it captures.

On an accelerator (CUDA, NPU) it captures only while the model runner's capture window is open (vLLM's
`cudagraph_capturing_enabled`, set by the runner around `capture_model`); a descriptor first seen later runs
eagerly, logged once and counted. Graph outputs are kept as weak references there, as vLLM does, so that every
graph of the pool can reuse the memory of the others. On the CPU lane replay is asynchronous on the CPU stream and
the wrapper waits for it before handing outputs to vLLM (host code reads them directly).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch
from vllm.compilation import monitor
from vllm.config import CUDAGraphMode
from vllm.distributed.device_communicators.pynccl_allocator import set_graph_pool_id
from vllm.forward_context import get_forward_context, is_forward_context_available
from vllm.logger import init_logger
from vllm.model_executor.offloader.base import get_offloader

from ..capture import Capture, capture_graph
from ..config import env_flags
from ..counters import Count, bump
from ..device import get_device
from ..errors import StaticInputMovedError
from ..fallbacks import SizeFallback, capture_failure, verify_mismatch
from ..staging import static_set_in_use
from ..verify import VerifyResult, compare_outputs
from .options import AscendGraphOptions, options_of

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)


def _addresses(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...]:
    """The input addresses a graph is bound to (vLLM calls pieces positionally, the whole model by keyword): read
    at capture, and compared at replay in debug mode only."""
    values = [*args, *(kwargs[name] for name in sorted(kwargs))]
    return tuple(value.data_ptr() for value in values if isinstance(value, torch.Tensor))


def _debug_requested(options: AscendGraphOptions) -> bool:
    """ascend_graph's `debug` option or ASCEND_GRAPH_DEBUG=1, or vLLM's own debug mode (its logger at DEBUG, which
    VLLM_LOGGING_LEVEL=DEBUG sets): where vLLM's wrapper checks input addresses at every replay."""
    return options.debug or env_flags()["debug"] or logger.isEnabledFor(logging.DEBUG)


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
        self.captures: dict[tuple[Any, int], Capture] = {}  # by (batch descriptor, static set)
        self.addresses: dict[tuple[Any, int], tuple[int, ...]] = {}  # the inputs each capture is bound to
        options = options_of(vllm_config)  # parsed once per wrapper, at start-up
        self.check_addresses = _debug_requested(options)
        self.eager_descriptors: dict[Any, SizeFallback] = {}  # capture failed or came too late: served eagerly
        self.capture_sizes = tuple(vllm_config.compilation_config.cudagraph_capture_sizes or ())
        self.verify = options.verify_requested
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
        key = (descriptor, static_set_in_use())
        capture = self.captures.get(key)
        if capture is None:
            return self._capture(key, args, kwargs)
        if self.check_addresses:
            self._check_addresses(key, args, kwargs)
        get_offloader().sync_prev_onload()  # the offloader's prefetches this graph depends on (as vLLM's wrapper)
        capture.graph.replay()
        bump(Count.REPLAYS)
        if self.device.host_reads_outputs:
            self.device.current_stream().synchronize()
        outputs = capture.outputs
        return outputs if capture.returns_tuple else outputs[0]

    def _check_addresses(self, key: tuple[Any, int], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Debug mode: the graph of `key` reads the addresses it was captured on, so the inputs must be there."""
        expected, got = self.addresses[key], _addresses(args, kwargs)
        if got != expected:
            moved = [index for index, (old, new) in enumerate(zip(expected, got, strict=False)) if old != new]
            raise StaticInputMovedError(
                f"ascend_graph: the inputs of a graph for {key[0]} (static set {key[1]}) are not where they were at "
                f"capture: tensor inputs {moved} of {len(got)} moved (captured with {len(expected)}). A graph "
                "replays the addresses it was captured on; the engine must keep each static set's inputs in place "
                "and name the set in use (staging.using_static_set)"
            )

    def _capture(self, key: tuple[Any, int], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        descriptor, static_set = key
        if self.device.kind != "cpu" and not monitor.cudagraph_capturing_enabled:
            why = f"a graph was asked for after start-up capture ended (static set {static_set})"
            return self._eager(descriptor, RuntimeError(why), args, kwargs)
        result = self.runnable(*args, **kwargs)  # warm-up, and the piece's output structure
        self.addresses[key] = _addresses(args, kwargs)
        try:
            capture = self._capture_graph(descriptor, args, kwargs)
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
        logger.debug("ascend_graph: captured a piece for %s (static set %d)", descriptor, static_set)
        # The static outputs, not the warm-up's: the next piece is captured reading them, so that at replay it
        # reads what this graph writes (on the CPU they also hold this call's values: the capture ran the piece).
        return outputs if capture.returns_tuple else outputs[0]

    def _capture_graph(self, descriptor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Capture:
        """The capture step, with vLLM's safeguards around it: NCCL's symmetric-memory allocator allocates from the
        graph pool while it captures (it asserts on the pool id), and the offloader's copy stream is synced before
        and joined inside the graph (its last prefetch forks that stream, which must be joined before capture ends)."""

        def forward(*inputs: Any) -> Any:
            output = self.runnable(*inputs, **kwargs)
            get_offloader().join_after_forward()
            return output

        if self.pool is not None:
            set_graph_pool_id(self.pool)
        get_offloader().sync_prev_onload()
        with _keep_allocator_cache() if self.keep_cache else contextlib.nullcontext():
            return capture_graph(
                forward,
                args,
                getattr(descriptor, "num_tokens", None),
                self.device,
                self.pool,
                stream=None if self.device.kind == "cpu" else self.device.current_stream(),
            )

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
