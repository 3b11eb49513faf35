"""ascend_graph's own graph mode inside vLLM's GPU model runner (Model Runner V2, vLLM 0.26 on CUDA).

vLLM's V2 runner prepares every step's inputs on the device (Triton kernels write its persistent input buffers on
the main stream), replays FULL graphs through its `CudaGraphManager` and PIECEWISE pieces through the platform's
static graph wrapper. ascend_graph keeps vLLM's step and scheduling and takes over the graphs. The code is three
host-generic mixins — `StaticSetsRunner` (the runner's static sets, their rotation and capture), `StaticSetGraphs`
(graphs per (size, set), dispatch, replay, report), `CaptureLoop` (the capture step) — and thin CUDA classes;
npu_runner.py puts the same mixins over vllm-ascend's V2 classes.

- FULL graphs: `AscendGraphCudaGraphs` replaces the capture step of vLLM's manager with the project's own
  (`capture.capture_graph` through the device layer, into vLLM's global pool, largest size first), with a progress
  bar, capture time and graph memory logged per mode, a failed capture leaving that size to the next candidate
  (PIECEWISE or eager) with one logged reason and advice, and counters (`captures`, `replays`).
- PIECEWISE pieces: the platform names `AscendGraphStaticWrapper` (static_graph.py), captured in the same window.
- decode_steps > 1 (mode "sync", and "forward-async" on CUDA): `gpu_burst.BurstRunner`, first in the CUDA runner's
  MRO, runs bursts of decode steps on the device, replaying the FULL graph of the first step's descriptor
  (`ag_last_desc`, kept by dispatch).
- mode "forward-async": vLLM's async scheduling (the host prepares step N+1 while step N runs; sampled tokens stay
  on the device). The number of static input sets is the runner class's (`ag_static_sets_for_async`): on CUDA one,
  vLLM's own buffers, captured once. The device-side input preparation of step N+1 reads step N's sampled tokens
  and token counts, so its kernels queue after replay N: a second set would change no ordering and cost a second
  capture of every FULL graph and PIECEWISE chain (time and graph pool) for nothing. Ascend (npu_runner.py) keeps
  two sets — input ids, positions, query start locations, sequence lengths, padding mask, block tables, slot
  mappings — rotated per step, one FULL graph and one chain of pieces per (size, set), because there the host
  writes what a graph reads (vllm-ascend's attention-parameter update).

Where the host does write what the device reads later, it is vLLM's staging: the host fills pinned buffers that the
step's input-preparation kernels read directly (UVA: request state, block-table writes and block counts), in pools
as deep as the batches in flight (two with async scheduling) — hazard 1 of docs/design.md, guarded by that depth.

Knobs (tests only): `ASCEND_GRAPH_STRESS_DELAY_MS` makes each step late on the host (a sleep) and on the device (a
spin kernel queued before its input preparation) by a random 0..value ms, drawn per rank.
`ASCEND_GRAPH_UNSAFE_NO_STAGING=1` is the broken variant: the staging pools are one deep, so the host may rewrite
pinned inputs that the previous step's kernels have not read yet. On the H200 it did not change tokens (docs/design.md,
hazard 1), so its test is a strict xfail.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm
from vllm.compilation import monitor
from vllm.config.compilation import CUDAGraphMode
from vllm.distributed.parallel_state import graph_capture, is_global_first_rank
from vllm.logger import init_logger
from vllm.model_executor.offloader.base import get_offloader
from vllm.v1.worker.gpu.buffer_utils import UvaBufferPool
from vllm.v1.worker.gpu.cudagraph_utils import BatchExecutionDescriptor, CudaGraphManager, ModelCudaGraphManager
from vllm.v1.worker.gpu.input_batch import InputBuffers
from vllm.v1.worker.gpu.model_runner import GPUModelRunner

from ..capture import Capture, capture_graph
from ..counters import Count, bump
from ..device import GraphDevice, get_device
from ..fallbacks import SizeFallback, capture_failure, verify_mismatch
from ..staging import SetRing, using_static_set
from ..verify import compare_outputs
from .gpu_burst import BurstRunner

logger = init_logger("vllm." + __name__)

SPIN_CYCLES_PER_MS = 1_500_000  # torch.cuda._sleep cycles per millisecond, roughly (H100/H200 clocks)


class CaptureLoop(CudaGraphManager):
    """The capture loop of vLLM's manager, on ascend_graph's capture step. ModelCudaGraphManager.capture(model, ...)
    builds each size's forward function and hands it to the next class in line: this one, last before vLLM's
    CudaGraphManager in the MRO of AscendGraphCudaGraphs (and of the Ascend manager, npu_runner.py). State (`ag_*`)
    is set by StaticSetGraphs.adopt."""

    ag_device: GraphDevice
    ag_set: int
    ag_graphs: dict[tuple[BatchExecutionDescriptor, int], Capture]
    ag_eager: dict[BatchExecutionDescriptor, SizeFallback]

    @torch.inference_mode()
    def capture(self, create_forward_fn: Callable[..., Any], progress_bar_desc: str = "") -> None:
        with graph_capture(device=self.device) as context:
            for mode in (CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL):
                descs = self._capture_descs.get(mode, [])  # vLLM orders them largest first
                if not descs:
                    continue
                start, reserved = time.perf_counter(), self.ag_device.memory_reserved()
                shown = tqdm(
                    descs,
                    desc=f"ascend_graph: capturing {mode.name} (set {self.ag_set})",
                    disable=not (is_global_first_rank()),
                )
                for desc in shown:
                    self._capture_desc(desc, create_forward_fn, context.stream)
                logger.info(
                    "ascend_graph: captured %d %s sizes (static set %d) in %.2f s, graph pool +%.3f GiB",
                    len(descs),
                    mode.name,
                    self.ag_set,
                    time.perf_counter() - start,
                    (self.ag_device.memory_reserved() - reserved) / 2**30,
                )
        self._graphs_captured = True

    def _capture_desc(self, desc: BatchExecutionDescriptor, create_forward_fn: Callable[..., Any], stream: Any) -> None:
        forward_fn = create_forward_fn(desc, warmup=True)
        forward_fn(CUDAGraphMode.NONE)  # warm-up: lazy initialisation must not be captured
        if desc.cg_mode == CUDAGraphMode.PIECEWISE and not self.use_breakable_cg:
            forward_fn(CUDAGraphMode.PIECEWISE)  # the pieces' AscendGraphStaticWrapper capture themselves
            return
        forward_fn = create_forward_fn(desc, warmup=False)  # fresh attention state for the capture
        if desc.cg_mode == CUDAGraphMode.PIECEWISE:
            forward_fn(CUDAGraphMode.PIECEWISE)
            return
        if desc in self.ag_eager:
            return

        def whole_step() -> None:
            forward_fn(CUDAGraphMode.NONE)
            get_offloader().join_after_forward()

        get_offloader().sync_prev_onload()
        try:
            capture = capture_graph(whole_step, (), desc.num_tokens, self.ag_device, self.pool, stream=stream)
        except Exception as error:  # noqa: BLE001 - this size is served by the next candidate, logged
            sizes = tuple(d.num_tokens for d in self._capture_descs.get(desc.cg_mode, []))
            bump(Count.CAPTURE_FAILURES)
            self._leave_eager(desc, capture_failure(desc.num_tokens, sizes, error))
            return
        if self.ag_verify:
            checked = self._verify_full(desc, forward_fn, capture)
            bump(Count.VERIFIED_SIZES if checked.ok else Count.VERIFY_MISMATCHES)
            if not checked.ok:
                self._leave_eager(desc, verify_mismatch(desc.num_tokens, checked.message()))
                return
        self.ag_graphs[(desc, self.ag_set)] = capture

    def _leave_eager(self, desc: BatchExecutionDescriptor, fallback: SizeFallback) -> None:
        """`desc` is served by the next candidate (PIECEWISE or eager) from now on, with one logged reason."""
        self.ag_eager[desc] = fallback
        logger.warning("%s", fallback.message())
        self.ag_device.synchronize()

    def _verify_full(self, desc: BatchExecutionDescriptor, forward_fn: Callable[..., Any], capture: Capture) -> Any:
        """The new FULL graph replayed against vLLM's forward run eagerly (its compiled pieces called directly, no
        graph) on the same random token ids: the outputs must agree within their dtype's tolerance (verify.py). A
        capture check, not a lowering check: both runs use the compiled pieces."""
        n = desc.num_tokens
        if self.ag_inputs is not None:
            vocab = self.vllm_config.model_config.get_vocab_size()
            ids = self.ag_inputs.input_ids[:n]
            ids.copy_(torch.randint(0, vocab, (n,), dtype=ids.dtype, device=ids.device))
        forward_fn(CUDAGraphMode.NONE)
        outputs = _tensors(self._outputs(desc))  # views of the static buffers both runs write
        expected = [t.clone() for t in outputs]
        for tensor in outputs:
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))  # poison: the replay must write every element
        capture.graph.replay()
        self.ag_device.synchronize()
        return compare_outputs(outputs, expected, n, {})


class StaticSetGraphs:
    """What ascend_graph's FULL-graph managers add to the host's, whatever the device: one graph per (size, static
    set), the set in use, sizes left eager, dispatch around them, the replay and the report. First in the MRO (before
    the host's manager class), so that its methods override the host's; `CaptureLoop` comes last. Managers are built
    by re-classing the runner's (`adopt`), so that their construction, candidates and dispatch table stay the host's."""

    def adopt(self, static_sets: int, device_kind: str, verify: bool = False) -> None:
        self.ag_device = get_device(device_kind)
        self.ag_verify = verify
        self.ag_inputs: Any = None  # the input buffers of the static set in use (the runner sets them)
        self.ag_static_sets = static_sets
        self.ag_set = 0  # the static set the next capture or replay uses
        self.ag_graphs: dict[tuple[BatchExecutionDescriptor, int], Capture] = {}
        self.ag_eager: dict[BatchExecutionDescriptor, SizeFallback] = {}
        self.ag_last_desc: BatchExecutionDescriptor | None = None  # the last dispatch's answer (gpu_burst.py)

    def use_set(self, index: int) -> None:
        self.ag_set = index

    def dispatch(
        self, num_reqs: int, num_tokens: int, uniform_token_count: int | None, *args: Any, **kwargs: Any
    ) -> BatchExecutionDescriptor:
        """vLLM's dispatch (its further arguments differ between vLLM versions and pass through), skipping sizes
        whose FULL capture failed: a batch of such a size goes to the graph vLLM keeps for mixed batches of it
        (PIECEWISE), else runs eagerly."""
        desc = super().dispatch(num_reqs, num_tokens, uniform_token_count, *args, **kwargs)  # type: ignore[misc]
        if desc in self.ag_eager and uniform_token_count is not None:
            desc = super().dispatch(num_reqs, num_tokens, None, *args, **kwargs)  # type: ignore[misc]
        if desc in self.ag_eager:
            bump(Count.EAGER_CALLS)
            desc = dataclasses.replace(desc, cg_mode=CUDAGraphMode.NONE, num_tokens=num_tokens, num_reqs=num_reqs)
        self.ag_last_desc = desc
        return desc

    def _replay(self, desc: BatchExecutionDescriptor) -> Any:
        """Replay the FULL graph of `desc` for the current static set; returns vLLM's hidden-state views."""
        get_offloader().sync_prev_onload()
        self.ag_graphs[(desc, self.ag_set)].graph.replay()
        bump(Count.REPLAYS)
        return self._outputs(desc)

    def _outputs(self, desc: BatchExecutionDescriptor) -> Any:
        """vLLM's views of what a FULL graph of `desc` writes: hidden states (and auxiliary ones), or the
        intermediate tensors on a pipeline stage before the last."""
        if not self.is_last_pp_rank:  # type: ignore[attr-defined]
            return self.intermediate_tensors[: desc.num_tokens]  # type: ignore[attr-defined]
        hidden = self.hidden_states[: desc.num_tokens]  # type: ignore[attr-defined]
        if not self.use_aux_hidden_state_outputs:  # type: ignore[attr-defined]
            return hidden
        return hidden, [x[: desc.num_tokens] for x in self.aux_hidden_states]  # type: ignore[attr-defined]

    def report(self) -> dict[str, Any]:
        """Captured FULL graphs and fallbacks (for `collective_rpc`)."""
        return {
            "full_graphs": len(self.ag_graphs),
            "static_sets": self.ag_static_sets,
            "capture_seconds": sum(c.capture_seconds for c in self.ag_graphs.values()),
            "pool_bytes": sum(c.pool_bytes for c in self.ag_graphs.values()),
            "fallbacks": [f.as_dict() for f in self.ag_eager.values()],
        }


class AscendGraphCudaGraphs(StaticSetGraphs, ModelCudaGraphManager, CaptureLoop):
    """vLLM's FULL-graph manager on CUDA with ascend_graph's capture step and static sets."""

    def run_fullgraph(self, desc: BatchExecutionDescriptor) -> Any:
        return self._replay(desc)


@dataclasses.dataclass
class V2InputSet:
    """What a FULL graph reads at fixed addresses: vLLM's input buffers and the block tables' input side."""

    input_buffers: InputBuffers
    input_block_tables: list[torch.Tensor]
    input_block_table_ptrs: torch.Tensor
    slot_mappings: torch.Tensor


class StaticSetsRunner:
    """What ascend_graph adds to a host's Model Runner V2, whatever the device: the static input sets and their
    rotation, the capture of every set at start-up, the stress knobs, the report. First in the MRO, before the
    host's runner class (vLLM's GPUModelRunner here, vllm-ascend's NPUModelRunner in npu_runner.py); the concrete
    class names its FULL-graph manager (`ag_manager_cls`), device kind and the static sets forward-async needs
    there (`ag_static_sets_for_async`: 1 where the device orders every write of them, 2 where the host writes some).
    With one set nothing rotates and the graphs are captured once, as vLLM does; with two, each step and each
    capture names its set (`staging.using_static_set`), which keys the FULL graphs and the pieces alike."""

    ag_manager_cls: type[StaticSetGraphs]
    ag_device_kind: str
    ag_static_sets_for_async: int

    def setup_ascend_graph(self, mode: str, verify: bool = False) -> None:
        self.ag_mode = mode
        self.ag_verify = verify
        self.ag_sets: SetRing[V2InputSet] = SetRing([])  # the staging protocol (staging.py), unguarded on the host
        self.ag_delay_ms = float(os.environ.get("ASCEND_GRAPH_STRESS_DELAY_MS", "0") or 0)
        self.ag_unsafe_staging = os.environ.get("ASCEND_GRAPH_UNSAFE_NO_STAGING") == "1"
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.ag_random = random.Random(1000 + rank)

    def initialize_kv_cache(self, kv_cache_config: Any, *args: Any, **kwargs: Any) -> None:
        # vLLM 0.32 passes is_profiling= / kv_cache_allocation_context= (vllm_conformance: its callers)
        super().initialize_kv_cache(kv_cache_config, *args, **kwargs)  # type: ignore[misc]
        if self.ag_unsafe_staging:
            _single_buffer_staging()
        manager = self.cudagraph_manager
        if manager is None:
            return
        manager.__class__ = self.ag_manager_cls
        count = self.ag_static_sets_for_async if self.ag_mode == "forward-async" else 1
        manager.adopt(count, self.ag_device_kind, self.ag_verify)
        self.ag_sets = SetRing([self._current_set()] + [self._new_set() for _ in range(count - 1)])
        self._use_set(0)

    def _current_set(self) -> V2InputSet:
        tables = self.block_tables
        return V2InputSet(
            self.input_buffers, list(tables.input_block_tables), tables.input_block_table_ptrs, tables.slot_mappings
        )

    def _new_set(self) -> V2InputSet:
        tables = self.block_tables
        # the host's own buffer class (vllm-ascend's carries host-side sequence lengths besides vLLM's)
        buffers = type(self.input_buffers)(
            max_num_reqs=self.max_num_reqs, max_num_tokens=self.max_num_tokens, device=self.device
        )
        block_tables = [torch.zeros_like(table) for table in tables.input_block_tables]
        pointers = torch.tensor([t.data_ptr() for t in block_tables], dtype=torch.uint64, device=self.device)
        return V2InputSet(buffers, block_tables, pointers, torch.zeros_like(tables.slot_mappings))

    def _use_set(self, index: int) -> None:
        chosen = self.ag_sets[index]
        self.input_buffers = chosen.input_buffers
        self.block_tables.input_block_tables = chosen.input_block_tables
        self.block_tables.input_block_table_ptrs = chosen.input_block_table_ptrs
        self.block_tables.slot_mappings = chosen.slot_mappings
        if isinstance(self.cudagraph_manager, StaticSetGraphs):
            self.cudagraph_manager.use_set(index)
            self.cudagraph_manager.ag_inputs = chosen.input_buffers

    def post_kv_cache_wake_up(self) -> None:
        """After a sleep the KV-cache pool comes back with undefined contents; the sets made here live in it (they
        were allocated with the KV cache). vLLM rebuilds its block-table pointers for the tables installed now;
        every set's pointers are rebuilt from its own tables and the sets made here start zeroed again, as made.
        (vLLM 0.26's worker calls this after a KV-cache wake-up; vllm-ascend's does not: Ascend refuses sleep mode
        with forward-async, platform_npu.py.)"""
        host = getattr(super(), "post_kv_cache_wake_up", None)
        if host is not None:
            host()
        tables = self.block_tables
        for index, static_set in enumerate(self.ag_sets):
            if index > 0:
                _zero_set(static_set)
            static_set.input_block_table_ptrs = tables._make_ptr_tensor(static_set.input_block_tables)
        if self.ag_sets:
            self._use_set(self.ag_sets.turn % len(self.ag_sets))

    @torch.inference_mode()
    def capture_model(self, *args: Any, **kwargs: Any) -> int:
        """The host's start-up capture, once per static set, each under its label, with the capture window open.
        Arguments pass through (vLLM 0.32's CUDA-graph memory profiling calls `capture_model(profile_only=True)`:
        one set, as vLLM measures it; versions.py)."""
        if kwargs.get("profile_only") or len(self.ag_sets) <= 1:
            return super().capture_model(*args, **kwargs)  # type: ignore[misc]
        monitor.set_cudagraph_capturing_enabled(True)
        try:
            total = 0
            for index in range(len(self.ag_sets)):
                self._use_set(index)
                with using_static_set(index):
                    total += super().capture_model(*args, **kwargs)  # type: ignore[misc]
        finally:
            monitor.set_cudagraph_capturing_enabled(False)
            self._use_set(0)
        return total

    @torch.inference_mode()
    def execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        dummy = kwargs.get("dummy_run", False)
        if self.ag_delay_ms and not dummy:
            time.sleep(self.ag_random.uniform(0, self.ag_delay_ms) / 1e3)  # the host is late...
            if self.ag_device_kind == "cuda":  # ...and the device, differently: this step queues behind a spin
                torch.cuda._sleep(int(self.ag_random.uniform(0, self.ag_delay_ms) * SPIN_CYCLES_PER_MS))
        if len(self.ag_sets) <= 1 or dummy:
            return super().execute_model(scheduler_output, *args, **kwargs)  # type: ignore[misc]
        index, _ = self.ag_sets.next_set()
        self._use_set(index)  # this step writes, and its graphs read, this set
        self.ag_sets.advance()
        with using_static_set(index):
            return super().execute_model(scheduler_output, *args, **kwargs)  # type: ignore[misc]

    def ascend_graph_report(self) -> dict[str, Any]:
        manager = self.cudagraph_manager
        report = manager.report() if isinstance(manager, StaticSetGraphs) else {}
        return {"mode": self.ag_mode, **report}


class AscendGraphGPUModelRunner(BurstRunner, StaticSetsRunner, GPUModelRunner):
    """vLLM's V2 GPU model runner with ascend_graph's graphs and bursts of decode steps (gpu_burst.py; built by
    `AscendGraphGPUWorker`)."""

    ag_manager_cls = AscendGraphCudaGraphs
    ag_device_kind = "cuda"
    ag_static_sets_for_async = 1  # the device orders every write of vLLM's buffers (module docstring)


def _single_buffer_staging() -> None:
    """The broken variant (tests only): every pinned staging pool of this worker process one deep."""
    pools = [obj for obj in gc.get_objects() if isinstance(obj, UvaBufferPool)]
    for pool in pools:
        pool.max_concurrency = 1
    logger.warning("ascend_graph: ASCEND_GRAPH_UNSAFE_NO_STAGING=1, %d staging pools one deep (broken)", len(pools))


def _zero_set(static_set: V2InputSet) -> None:
    """A set's device tensors back to their state when made (zeros): its input buffers, block tables, slots."""
    buffers = [value for value in vars(static_set.input_buffers).values() if isinstance(value, torch.Tensor)]
    for tensor in [*buffers, *static_set.input_block_tables, static_set.slot_mappings]:
        tensor.zero_()


def _tensors(outputs: Any) -> list[torch.Tensor]:
    """The tensors of a FULL graph's outputs (hidden states, with auxiliary ones; intermediate tensors)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, tuple):
        return [outputs[0], *outputs[1]]
    return list(outputs.tensors.values())  # IntermediateTensors
