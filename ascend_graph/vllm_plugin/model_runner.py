"""vLLM's CPU model runner with the ascend_graph device job: graph mode "sync" and "forward-async" inside vLLM.

On the CPU lane the "device" is the CPU stream of `ascend_graph.device.cpu` (an executor thread). Each step's
device work — the prepared inputs copied into a static input set, the previous step's sampled tokens scattered
into the input ids, the forward (whose pieces replay their captured graphs inline, one handoff per step), the
logits, the sampler — is one job on that stream.

- ``sync``: the job runs while the worker's thread waits for it (vLLM's own step structure, one handoff).
- ``forward-async`` (needs vLLM's async scheduling, which the platform turns on): `execute_model` prepares step
  N+1 on the host while the job of step N still runs. The host never writes what a running job reads:

  1. vLLM's host prep writes its own persistent buffers (input ids, positions, query start locations, sequence
     lengths, block tables, slot mappings, padding mask). Everything the job will read from them is copied into
     one of two static sets (the "host-to-device copy") and the job's tensors are re-pointed at that set; set
     k is reused only after the event of the job that last read it has fired (docs/design.md, hazards 1 and 3).
  2. Sampled tokens stay on the device: the job writes them into a static per-set tensor that vLLM's
     bookkeeping keeps as `prev_sampled_token_ids`; the next job scatters them into its input ids (hazard 4).
     The host reads them only in `get_output()`, after the job's event, from a copy made by the job.
  3. Ordering is by the stream (FIFO) and events, never by a device-wide wait (hazard 5). KV-cache block
     zeroing that vLLM does during host prep is queued on the stream instead of run at once.
  4. The sampling metadata the job uses is a snapshot taken at launch: the host rewrites vLLM's copy for N+1.

  A step that needs host-side state the job cannot snapshot safely (logprobs, prompt logprobs, penalties,
  min-p/min-tokens/logit-bias/bad-words/allowed-tokens, structured output, per-request seeds, KV block copies)
  runs as a sync step: the stream is drained and vLLM's own path runs. Such steps are counted
  (`vllm_sync_steps`) and their reason is logged once. Speculative decoding, pipeline parallelism and pooling
  models are refused by the platform with the setting to change.

Two environment knobs exist for the stress test only: `ASCEND_GRAPH_STRESS_DELAY_MS` (each step's host prep and
each job first sleep a random 0..value ms, drawn per rank, so host and device drift apart differently on every
tensor-parallel rank) and `ASCEND_GRAPH_UNSAFE_NO_STAGING=1` (the broken variant: jobs
read vLLM's live buffers, which the host rewrites for the next step; it exists to show that the test can fail).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from vllm.config import CUDAGraphMode
from vllm.forward_context import set_forward_context
from vllm.logger import init_logger
from vllm.v1.attention.backend import AttentionCGSupport
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, AsyncModelRunnerOutput, ModelRunnerOutput, SamplerOutput
from vllm.v1.utils import CpuGpuBuffer
from vllm.v1.worker.cpu_model_runner import CPUModelRunner
from vllm.v1.worker.gpu_model_runner import GPUModelRunner

from ..counters import Count, bump, counters
from ..device.cpu import CPU_DEVICE, CpuEvent
from ..staging import SetRing, using_static_set
from .cpu_burst import run_async_burst, run_burst
from .multistep import burst_plan
from .static_graph import AscendGraphStaticWrapper

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)

MODES = ("sync", "forward-async")


def _set_label(index: int) -> int:
    """The label under which ring set `index`'s graphs are kept (`staging.using_static_set`): 0 is vLLM's own
    buffers (sync steps, start-up capture without staging), so ring sets count from 1."""
    return index + 1


def host_state_reason(sampling_params: Any) -> str | None:
    """Why a request's sampling needs host state that a forward-async job cannot snapshot, or None."""
    if sampling_params is None:
        return "a request without sampling parameters (pooling)"
    checks = (
        ("logprobs", sampling_params.logprobs is not None),
        ("prompt_logprobs", sampling_params.prompt_logprobs is not None),
        ("presence_penalty", bool(sampling_params.presence_penalty)),
        ("frequency_penalty", bool(sampling_params.frequency_penalty)),
        ("repetition_penalty", sampling_params.repetition_penalty != 1.0),
        ("min_p", bool(sampling_params.min_p)),
        ("min_tokens", bool(sampling_params.min_tokens)),
        ("logit_bias", bool(sampling_params.logit_bias)),
        ("bad_words", bool(sampling_params.bad_words)),
        ("allowed_token_ids", bool(sampling_params.allowed_token_ids)),
        ("structured_outputs", sampling_params.structured_outputs is not None),
        ("seed", sampling_params.seed is not None),
    )
    names = [name for name, used in checks if used]
    return f"sampling parameter(s) {names}" if names else None


@dataclasses.dataclass
class _StagedInputs:
    """One static input set: device copies of vLLM's buffers, the sampled-token tensor, the guard event."""

    copies: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    ready: CpuEvent = dataclasses.field(default_factory=CpuEvent)
    sampled: torch.Tensor | None = None


class _Staging:
    """Copies the parts of vLLM's persistent buffers a job reads into a static set and re-points the job's tensors."""

    def __init__(self, buffers: dict[int, torch.Tensor], static_set: _StagedInputs, unsafe: bool = False) -> None:
        self.buffers, self.static_set = ({} if unsafe else buffers), static_set
        self.staged: set[int] = set()
        self.memo: dict[int, Any] = {}  # one re-pointed copy per object (metadata shared by many layers)

    def tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        key = tensor.untyped_storage().data_ptr()
        base = self.buffers.get(key)
        if base is None:
            return tensor  # allocated for this step only: nobody rewrites it
        if base.dtype != tensor.dtype:
            raise RuntimeError(f"ascend_graph: a {tensor.dtype} view of a {base.dtype} vLLM buffer cannot be staged")
        target = self.static_set.copies.get(key)
        if target is None or target.shape != base.shape:
            target = self.static_set.copies[key] = torch.empty_like(base)
        if key not in self.staged:
            target.copy_(base)
            self.staged.add(key)
        offset = tensor.storage_offset() - base.storage_offset()
        return target.as_strided(tensor.size(), tensor.stride(), target.storage_offset() + offset)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
            return type(value)(self(item) for item in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if id(value) in self.memo:
                return self.memo[id(value)]
            changed = {}
            for field in dataclasses.fields(value):
                item = getattr(value, field.name, None)
                new = self(item)
                if new is not item:
                    changed[field.name] = new
            clone = value
            if changed:
                clone = copy.copy(value)
                for name, new in changed.items():
                    object.__setattr__(clone, name, new)
            self.memo[id(value)] = clone
            return clone
        return value


class _Delegate:
    """Stands for the model while start-up capture stages a dummy run's inputs: calls go to `call`, anything else
    to the model."""

    def __init__(self, model: Any, call: Callable[..., Any]) -> None:
        self._model, self._call = model, call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


@dataclasses.dataclass
class _Launched:
    scheduler_output: Any
    sampled: torch.Tensor
    tokens: Future[torch.Tensor]  # the job's host copy of the sampled tokens, or its error
    done: CpuEvent


@dataclasses.dataclass
class _Step:
    """One forward-async step as vLLM's host prep left it: sizes, vLLM's graph choice, the tensors the job reads
    (still vLLM's buffers until staged)."""

    total: int
    num_reqs: int
    padded: int
    cudagraph_mode: Any
    batch_desc: Any
    across_dp: Any
    tensors: dict[str, Any]


class AscendGraphAsyncOutput(AsyncModelRunnerOutput):
    """The output of a forward-async step: tokens are read from the job's host copy after its event."""

    def __init__(self, output: ModelRunnerOutput, launched: _Launched, invalid_req_indices: list[int]) -> None:
        self._output, self._launched, self._invalid = output, launched, invalid_req_indices

    @property
    def sampled(self) -> torch.Tensor:
        """The step's sampled tokens on the device (the static set's tensor the next job scatters from)."""
        return self._launched.sampled

    def get_output(self) -> ModelRunnerOutput:
        self._launched.done.synchronize()
        try:
            tokens: list[list[int]] = self._launched.tokens.result(timeout=0).tolist()
        except BaseException as error:
            raise RuntimeError(f"ascend_graph: the forward-async device job failed: {error!r}") from error
        for index in self._invalid:
            tokens[index].clear()
        self._output.sampled_token_ids = tokens
        return self._output


@dataclasses.dataclass
class _RunnerState:
    """What the ascend_graph runner adds to vLLM's CPUModelRunner, in one attribute (`runner.ag`)."""

    mode: str
    random: random.Random  # the stress delays' draws
    stream: Any = dataclasses.field(default_factory=lambda: CPU_DEVICE.default_stream())
    # The staging protocol (staging.py): the host rewrites a set only after the job that last read it finished.
    sets: SetRing = dataclasses.field(
        default_factory=lambda: SetRing((_StagedInputs(), _StagedInputs()), guard=lambda static_set: static_set.ready)
    )
    launched: _Launched | None = None
    async_step: bool = False
    pending_scatter: tuple[np.ndarray, np.ndarray] | None = None
    reasons_logged: set[str] = dataclasses.field(default_factory=set)
    buffers: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    buffers_of: int | None = None
    separate_kv_update: bool | None = None
    delay_s: float = dataclasses.field(
        default_factory=lambda: float(os.environ.get("ASCEND_GRAPH_STRESS_DELAY_MS", "0") or 0) / 1e3
    )
    unsafe: bool = dataclasses.field(default_factory=lambda: os.environ.get("ASCEND_GRAPH_UNSAFE_NO_STAGING") == "1")
    decode_steps: int = 1  # multistep.py: decode steps per host round trip
    burst_output: Any = None  # the scheduler output whose step starts a burst, between execute and sample
    device_ms: float = 0.0  # time the stream spent in forward jobs (events), read by bursts


class AscendGraphCPUModelRunner(CPUModelRunner):
    """Built by `AscendGraphCPUWorker` (re-classed from vLLM's CPUModelRunner, then `setup_ascend_graph`)."""

    def setup_ascend_graph(self, mode: str, decode_steps: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"ascend_graph mode {mode!r} is not allowed; allowed values are {MODES}")
        if mode == "forward-async" and not self.use_async_scheduling:
            raise ValueError("ascend_graph mode 'forward-async' needs vLLM's async scheduling (the platform sets it)")
        # Each rank draws its own delays (tensor parallel: ranks must stay in step however long each one waits).
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.ag = _RunnerState(mode, random.Random(1000 + rank), decode_steps=decode_steps)
        if decode_steps > 1 and mode == "sync" and self.use_async_scheduling:
            raise ValueError("ascend_graph decode_steps > 1 in mode 'sync' needs async scheduling off (platform.py)")
        if self.ag.unsafe:
            logger.warning("ascend_graph: ASCEND_GRAPH_UNSAFE_NO_STAGING=1, forward-async reads live buffers (broken)")

    # -- FULL graphs on the CPU lane -------------------------------------------------------------------------------

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        super().load_model(*args, **kwargs)
        if self.compilation_config.cudagraph_mode.has_full_cudagraphs():  # as GPUModelRunner wraps for CUDA graphs
            self.model = AscendGraphStaticWrapper(self.model, self.vllm_config, runtime_mode=CUDAGraphMode.FULL)

    def capture_at_startup(self) -> None:
        """Every capture size at start-up, largest first, as vLLM's GPU runners do: a dummy batch of each size runs
        in graph mode and the wrappers capture it, bound to vLLM's own buffers (which sync steps read) and, for
        forward-async with FULL graphs, to each static set (which its jobs read: the dummy run's inputs are staged
        into the set first, as a step's are). Start-up never fails for this: a size that cannot be run here is
        captured at its first use, as before, with the reason logged. (PIECEWISE pieces of forward-async are
        captured at first use: their inputs are activations, not staged buffers.)"""
        config = self.compilation_config
        sizes = sorted(config.cudagraph_capture_sizes or (), reverse=True)
        if config.cudagraph_mode == CUDAGraphMode.NONE or not sizes:
            return
        runtime = CUDAGraphMode.FULL if config.cudagraph_mode.has_full_cudagraphs() else CUDAGraphMode.PIECEWISE
        sets: list[_StagedInputs | None] = [None]  # None: vLLM's own buffers, label 0; ring set k: _set_label(k)
        if self.ag.mode == "forward-async" and runtime == CUDAGraphMode.FULL and not self.ag.unsafe:
            sets += list(self.ag.sets)
        start, captured = time.perf_counter(), counters()["captures"]
        try:
            for label, static_set in enumerate(sets):
                for size in tqdm(sizes, desc=f"ascend_graph: capturing {runtime.name} graphs (CPU)", disable=None):
                    with self._inputs_staged_into(static_set, label):
                        full = runtime == CUDAGraphMode.FULL
                        self._dummy_run(size, cudagraph_runtime_mode=runtime, force_attention=full)
        except Exception as error:  # noqa: BLE001 - the sizes left are captured at their first step
            logger.warning("ascend_graph: start-up capture stopped (%r); the sizes left capture at first use", error)
        captured = counters()["captures"] - captured
        bump(Count.STARTUP_CAPTURES, captured)
        logger.info(
            "ascend_graph: captured %d graphs for sizes %s at start-up in %.2f s",
            captured,
            sizes,
            time.perf_counter() - start,
        )

    @contextlib.contextmanager
    def _inputs_staged_into(self, static_set: _StagedInputs | None, label: int) -> Iterator[None]:
        """While a dummy run calls the model, its inputs are staged into `static_set` first (None: left as they are),
        and the graphs captured are those of static set `label` (`_set_label`)."""
        if static_set is None:
            yield
            return
        model = self.model

        def staged_call(*args: Any, **inputs: Any) -> Any:
            with using_static_set(label):  # on the stream's thread, where the graphs are captured
                return model(*args, **_Staging(self._registered_buffers(), static_set)(inputs))

        self.model = _Delegate(model, staged_call)
        try:
            yield
        finally:
            self.model = model

    def _check_and_update_cudagraph_mode(
        self, attention_backends: Any, kv_cache_groups: Any, is_profiling: bool = False
    ) -> None:
        if self.speculative_config is not None or not self.compilation_config.cudagraph_mode.has_full_cudagraphs():
            return super()._check_and_update_cudagraph_mode(attention_backends, kv_cache_groups, is_profiling)
        # vLLM's CPU attention declares no CUDA-graph support, since a CUDA graph would freeze its metadata. A CPU
        # graph replays the captured model, whose attention ops read the replayed step's metadata from the
        # forward context: every batch shape is served, which is what AttentionCGSupport.ALWAYS declares.
        mode = self.compilation_config.resolve_cudagraph_mode_and_sizes(
            AttentionCGSupport.ALWAYS,
            None,
            self.uniform_decode_query_len,
            use_v2_model_runner=False,
            kv_cache_config=self.kv_cache_config,
            max_num_reqs=self.max_num_reqs,
            is_profiling=is_profiling,
        )
        self.cudagraph_dispatcher.initialize_cudagraph_keys(mode, self.uniform_decode_query_len)
        return None

    # -- the device stream -------------------------------------------------------------------------------------

    def _on_stream(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` as one job on the CPU stream and wait for it (a sync step's one handoff)."""
        result: Future[Any] = Future()

        def job() -> None:
            try:
                result.set_result(fn())
            except BaseException as error:  # noqa: BLE001 - re-raised on the host below
                result.set_exception(error)

        timed = self.ag.decode_steps > 1  # bursts report device time, measured with events on the stream
        start, end = CpuEvent(), CpuEvent()
        if timed:
            start.record(self.ag.stream)
        self.ag.stream.submit(job)
        if timed:
            end.record(self.ag.stream)
        self.ag.stream.synchronize()
        if timed:
            self.ag.device_ms += start.elapsed_time(end)
        return result.result(timeout=0)

    def _model_forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._on_stream(lambda: GPUModelRunner._model_forward(self, *args, **kwargs))

    def _zero_block_ids(self, block_ids: list[int]) -> None:
        if self.ag.mode == "forward-async":  # a running job may still read those blocks: order it on the stream
            ids = list(block_ids)
            self.ag.stream.submit(lambda: CPUModelRunner._zero_block_ids(self, ids))
        else:
            super()._zero_block_ids(block_ids)

    # -- forward-async ------------------------------------------------------------------------------------------

    def _registered_buffers(self) -> dict[int, torch.Tensor]:
        """vLLM's persistent per-step tensors (runner and persistent batch), by storage address."""
        if self.ag.buffers_of == id(self.input_batch):
            return self.ag.buffers
        found: dict[int, torch.Tensor] = {}
        owners = [self, self.input_batch, *self.input_batch.block_table.block_tables]
        for owner in owners:
            for value in vars(owner).values():
                tensor = value.gpu if isinstance(value, CpuGpuBuffer) else value
                if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
                    found.setdefault(tensor.untyped_storage().data_ptr(), tensor)
        self.ag.buffers, self.ag.buffers_of = found, id(self.input_batch)
        return found

    def _sync_step_reason(self, scheduler_output: Any) -> str | None:
        if scheduler_output.kv_cache_block_copies:
            return "KV cache block copies"
        if getattr(scheduler_output, "has_structured_output_requests", False):
            return "structured output"
        new = {request.req_id: request for request in scheduler_output.scheduled_new_reqs}
        for req_id in scheduler_output.num_scheduled_tokens:
            request = new.get(req_id) or self.requests.get(req_id)
            reason = host_state_reason(getattr(request, "sampling_params", None))
            if reason:
                return reason
        return None

    def drain(self) -> None:
        """Wait until every job on the stream has run (before a sync step)."""
        self.ag.stream.synchronize()

    def execute_model(self, scheduler_output: Any, intermediate_tensors: Any = None) -> Any:
        plan = burst_plan(scheduler_output)
        self.ag.burst_output = scheduler_output if plan is not None and plan.steps > 1 else None
        if plan is not None and plan.steps == 1 and scheduler_output.total_num_scheduled_tokens:
            bump(Count.BURST_SINGLE_STEPS)
        if self.ag.mode != "forward-async":
            return super().execute_model(scheduler_output, intermediate_tensors)
        reason = self._sync_step_reason(scheduler_output)
        self.ag.async_step = reason is None
        if not self.ag.async_step:
            if reason not in self.ag.reasons_logged:
                self.ag.reasons_logged.add(reason)
                logger.warning("ascend_graph forward-async: a step runs sync because of %s", reason)
            bump(Count.VLLM_SYNC_STEPS)
            self.drain()
            return super().execute_model(scheduler_output, intermediate_tensors)
        return self._launch(scheduler_output)

    def _prepare_input_ids(
        self, scheduler_output: Any, num_reqs: int, total_num_scheduled_tokens: int, cu_num_tokens: np.ndarray
    ) -> None:
        if not self.ag.async_step:
            return super()._prepare_input_ids(scheduler_output, num_reqs, total_num_scheduled_tokens, cu_num_tokens)
        # The input ids of requests continuing from the previous step are that step's sampled tokens, which
        # exist only on the device (or not yet): record where they go; the job scatters them.
        self.ag.pending_scatter = None
        if self.input_batch.prev_sampled_token_ids is None:
            return None
        previous = self.prev_positions.np[:num_reqs]
        rows = np.nonzero(previous >= 0)[0]
        if rows.size:
            self.ag.pending_scatter = (cu_num_tokens[rows].astype(np.int64) - 1, previous[rows].astype(np.int64))
        return None

    def _launch(self, scheduler_output: Any) -> None:
        """Step N+1's host part: vLLM's host prep, the host-to-device copy into a free static set, and the job
        queued behind step N's on the stream (the module docstring has the rules)."""
        if self.execute_model_state is not None or self.ag.launched is not None:
            raise RuntimeError("State error: sample_tokens() must be called after execute_model() returns None.")
        if self.ag.delay_s:  # stress: the host too is late by a random amount, differently on every rank
            time.sleep(self.ag.random.uniform(0, self.ag.delay_s))
        index, static_set = self.ag.sets.next_set()  # the job that last read this set (two steps ago) has finished
        deferred_corrections = self._update_states(scheduler_output)
        if not scheduler_output.total_num_scheduled_tokens:
            return EMPTY_MODEL_RUNNER_OUTPUT
        step = self._prepare_step(scheduler_output)
        staged_ids, staged = self._stage(step, static_set)
        num_reqs = step.num_reqs
        if static_set.sampled is None or static_set.sampled.shape[0] < num_reqs:
            static_set.sampled = torch.zeros((max(num_reqs, self.max_num_reqs), 1), dtype=torch.int64)
        sampled = static_set.sampled[:num_reqs]
        tokens: Future[torch.Tensor] = Future()
        self.ag.stream.submit(self._job(step, staged_ids, staged, sampled, tokens, _set_label(index)))
        static_set.ready.record(self.ag.stream)
        self.ag.launched = _Launched(scheduler_output, sampled, tokens, static_set.ready)
        self.ag.sets.advance()
        bump(Count.VLLM_ASYNC_STEPS)
        if deferred_corrections:
            deferred_corrections()
        return None

    def _prepare_step(self, scheduler_output: Any) -> _Step:
        """vLLM's own host prep of one step (input ids, positions, padding, slot mappings, attention metadata),
        written into vLLM's persistent buffers as its runner writes them."""
        total = scheduler_output.total_num_scheduled_tokens
        num_reqs = self.input_batch.num_reqs
        scheduled = np.array(
            [scheduler_output.num_scheduled_tokens[i] for i in self.input_batch.req_ids], dtype=np.int32
        )
        max_query = int(scheduled.max())
        logits_indices, _, max_sampled = self._prepare_inputs(scheduler_output, scheduled)
        cudagraph_mode, batch_desc, _, across_dp, _ = self._determine_batch_execution_and_padding(
            num_tokens=total,
            num_reqs=num_reqs,
            num_scheduled_tokens_np=scheduled,
            max_num_scheduled_tokens=max_query,
            allow_microbatching=False,
        )
        padded = batch_desc.num_tokens
        if self.ag.separate_kv_update is None:  # fixed once the attention backends exist (first step)
            # Backends that write the KV cache outside forward() take slot mappings of the padded size (as vLLM).
            self.ag.separate_kv_update = not all(
                group.backend.forward_includes_kv_cache_update for groups in self.attn_groups for group in groups
            )
        by_group, slot_mappings = self._get_slot_mappings(
            num_tokens_padded=padded if self.ag.separate_kv_update else total,
            num_reqs_padded=num_reqs,
            num_tokens_unpadded=total,
        )
        attn_metadata, _ = self._build_attention_metadata(
            num_tokens=total,
            num_reqs=num_reqs,
            max_query_len=max_query,
            logits_indices=logits_indices,
            max_num_sampled_tokens=max_sampled,
            num_scheduled_tokens=scheduler_output.num_scheduled_tokens,
            slot_mappings=by_group,
        )
        input_ids, inputs_embeds, positions, _, model_kwargs, _ = self._preprocess(scheduler_output, padded, None)
        tensors = {
            "input_ids": input_ids,
            "inputs_embeds": inputs_embeds,
            "positions": positions,
            "model_kwargs": model_kwargs,
            "attn_metadata": attn_metadata,
            "slot_mappings": slot_mappings,
            "logits_indices": logits_indices,
            "is_padding": self._prepare_padding_mask(total, padded),
        }
        return _Step(total, num_reqs, padded, cudagraph_mode, batch_desc, across_dp, tensors)

    def _stage(self, step: _Step, static_set: _StagedInputs) -> tuple[torch.Tensor, dict[str, Any]]:
        """The host-to-device copy: everything the job reads from vLLM's buffers goes into this static set; the
        job's tensors point there. Returns the staged input ids and the staged tensors."""
        stage = _Staging(self._registered_buffers(), static_set, unsafe=self.ag.unsafe)
        staged_ids = stage(self.input_ids.gpu)
        # Rows past the batch (padding up to the capture size) keep whatever the host buffer held there, which
        # can be the -1 placeholder of a token that only ever existed on the device: give them a valid id.
        staged_ids[step.total : step.padded].zero_()
        return staged_ids, stage(step.tensors)

    def _job(
        self,
        step: _Step,
        staged_ids: torch.Tensor,
        staged: dict[str, Any],
        sampled: torch.Tensor,
        tokens: Future[torch.Tensor],
        label: int,
    ) -> Callable[[], None]:
        """The device work of one step, run on the stream: the previous step's tokens scattered into the input
        ids, the forward (the graphs of static set `label` replay inside), the logits, the sampler; the tokens' host
        copy or the error goes to `tokens`."""
        scatter = self.ag.pending_scatter
        self.ag.pending_scatter = None
        prev_tokens = self.input_batch.prev_sampled_token_ids
        metadata = self._snapshot_sampling_metadata()
        vllm_config = self.vllm_config
        delay = self.ag.random.uniform(0, self.ag.delay_s) if self.ag.delay_s else 0.0

        def job() -> None:
            try:
                if delay:
                    time.sleep(delay)
                if scatter is not None:
                    destination, source = (torch.from_numpy(index) for index in scatter)
                    staged_ids[destination] = prev_tokens[source, 0].to(staged_ids.dtype)
                with (
                    using_static_set(label),
                    set_forward_context(
                        staged["attn_metadata"],
                        vllm_config,
                        num_tokens=step.padded,
                        num_tokens_across_dp=step.across_dp,
                        cudagraph_runtime_mode=step.cudagraph_mode,
                        batch_descriptor=step.batch_desc,
                        slot_mapping=staged["slot_mappings"],
                        is_padding=staged["is_padding"],
                    ),
                ):
                    hidden = GPUModelRunner._model_forward(
                        self,
                        input_ids=staged["input_ids"],
                        positions=staged["positions"],
                        inputs_embeds=staged["inputs_embeds"],
                        **staged["model_kwargs"],
                    )
                logits = self.model.compute_logits(hidden[staged["logits_indices"]])
                output = self.sampler(logits=logits, sampling_metadata=metadata)
                sampled.copy_(output.sampled_token_ids)
                tokens.set_result(output.sampled_token_ids.clone())  # the host copy, read late
            except BaseException as error:  # noqa: BLE001 - raised by get_output() on the host
                tokens.set_exception(error)

        return job

    def _snapshot_sampling_metadata(self) -> Any:
        metadata = self.input_batch.sampling_metadata
        changes = {
            field.name: getattr(metadata, field.name).clone()
            for field in dataclasses.fields(metadata)
            if isinstance(getattr(metadata, field.name), torch.Tensor)
        }
        return dataclasses.replace(metadata, **changes)

    def sample_tokens(self, grammar_output: Any) -> Any:
        burst, self.ag.burst_output = self.ag.burst_output, None
        launched, self.ag.launched = self.ag.launched, None
        if launched is not None:
            output = self._async_output(launched, grammar_output)
            return output if burst is None else run_async_burst(self, burst, output, self._launch_further_step)
        if burst is not None:
            return self._burst(burst, grammar_output)
        if self.ag.mode == "forward-async" and self.execute_model_state is not None:
            # A sync step inside forward-async: vLLM's own sampling, tokens read at once.
            self.use_async_scheduling = False
            try:
                return super().sample_tokens(grammar_output)
            finally:
                self.use_async_scheduling = True
        return super().sample_tokens(grammar_output)

    def _async_output(self, launched: _Launched, grammar_output: Any) -> AscendGraphAsyncOutput:
        """A forward-async step's output: vLLM's bookkeeping with the tokens left on the device (placeholders)."""
        if grammar_output is not None:
            raise RuntimeError("ascend_graph forward-async: a grammar bitmask reached an async step")
        self.input_batch.prev_sampled_token_ids = None
        promise = SamplerOutput(sampled_token_ids=launched.sampled, logprobs_tensors=None)
        (_, _, _, _, prompt_logprobs, req_ids, req_id_to_index, invalid) = self._bookkeeping_sync(
            launched.scheduler_output,
            promise,
            None,
            torch.empty(0),  # no prompt logprobs on async steps: the hidden states are not needed here
            launched.scheduler_output.total_num_scheduled_tokens,
        )
        kv_connector_output, self.kv_connector_output = self.kv_connector_output, None
        output = ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index=req_id_to_index,
            sampled_token_ids=[],
            logprobs=None,
            prompt_logprobs_dict=prompt_logprobs,
            kv_connector_output=kv_connector_output,
        )
        return AscendGraphAsyncOutput(output, launched, invalid)

    def _burst(self, scheduler_output: Any, grammar_output: Any) -> Any:
        """A burst of decode steps (multistep.py): this step's own sampling, then the further steps, each with
        vLLM's own host prep and sampler, the forward on the stream."""

        def step(inner: Any) -> Any:
            if GPUModelRunner.execute_model(self, inner) is not None:
                raise RuntimeError("ascend_graph: a burst's decode step returned before sampling")
            return GPUModelRunner.sample_tokens(self, None)

        if self.ag.mode != "forward-async":
            first = GPUModelRunner.sample_tokens(self, grammar_output)
            return run_burst(self, scheduler_output, first, step, lambda: self.ag.device_ms)
        # A sync burst inside forward-async (its requests need host state): vLLM's synchronous sampling for every
        # step, as a sync step; the scheduler reserved the whole burst, so a step that raises fails the step.
        self.use_async_scheduling = False
        try:
            first = GPUModelRunner.sample_tokens(self, grammar_output)
            return run_burst(self, scheduler_output, first, step, lambda: self.ag.device_ms, must_finish=True)
        finally:
            self.use_async_scheduling = True

    def _launch_further_step(self, inner: Any) -> AscendGraphAsyncOutput:
        """One further step of a forward-async burst: launched like any forward-async step, its async output."""
        self._launch(inner)
        launched, self.ag.launched = self.ag.launched, None
        if launched is None:
            raise RuntimeError("ascend_graph: a forward-async burst step launched no job")
        return self._async_output(launched, None)
