"""Bursts of decode steps on CUDA (decode_steps = K > 1, multistep.py; docs/multistep.md): vLLM 0.26's Model
Runner V2 with K decode steps per host round trip, the further steps on the device without a host read.

V2 keeps what a decode step needs on the device: after each step `postprocess_sampled` (vLLM's `post_update`
kernel) advances `num_computed_tokens`, `last_sampled_tokens`, the penalties' `output_bin_counts` and the token
history. A further step of a burst therefore re-derives its inputs with vLLM's own kernels from that state and
the first step's batch (same requests, same order, same padding, so the same batch descriptor and FULL graph):
`prepare_pos_seq_lens` (positions, sequence lengths), `combine_sampled_and_draft_tokens` (input ids from the
tokens just sampled), `prepare_attn` (block tables gathered, slot mappings from the new positions: the scheduler
allocated every slot of the burst before it, `num_lookahead_tokens`), the attention metadata of the model state
with the host's sequence-length upper bound one higher per step (known without reading the device), then the
forward (`run_fullgraph`, or vLLM's forward context for PIECEWISE and eager sizes), `sample` and
`postprocess_sampled`. Nothing is read back inside the burst: the tokens of all steps are joined on the device
and copied to the host once, when the burst ends (`BurstOutput`).

Same tokens as K = 1: every step is the one K = 1 would run, on the same state; sampling seeds are keyed by
(request seed, position) (`sample/gumbel.py`), penalties read the device counts `post_update` maintains, min_tokens
the device positions. Tokens after a stop are dropped by the scheduler's per-token checks; bursts are capped by
the scheduler at what any request may still produce.

With vLLM's async scheduling (mode "forward-async"; `AsyncMultiStepScheduler`) the burst is the same code: V2 runs
no host read in a step either way, and its executor reads an `AsyncModelRunnerOutput` late (in the worker's output
thread) where async scheduling is on. `sample_tokens` queues the burst's K steps and returns; the engine core
schedules the next step while they run (the scheduler reserved the burst's K tokens as placeholders, so that step
is scheduled at the position after the burst) and vLLM's `execute_model` prepares it on the host meanwhile; its
first input token is the burst's last sampled token, which vLLM's `combine_sampled_and_draft_tokens` reads from
`last_sampled_tokens` on the device, and its positions come from the device's `num_computed_tokens`, which the
burst's `post_update`s advanced by K. The host's own counts (the scheduler's `num_computed_tokens`, V2's
`num_computed_tokens_np` and sequence-length upper bound) already include the reserved tokens. CUDA: unverified
until tests/vllm_plugin/test_gpu_multistep.py runs on the GPU lane; the CPU stand-in (test_gpu_burst.py) shows the
call order and the output protocol only.

Counters (multistep.count_burst): bursts, burst steps, bursts cut short (the scheduler's plan was short), and the
further steps' device time (CUDA events on the main stream around them, read when the tokens reach the host) and
host time: without async scheduling the wall time from the burst's second step until its tokens reached the host,
minus the device time; with it, the time the host took to queue the further steps (the output is read late, by
vLLM's output thread, so the wall time to it says nothing about the burst).
Steps that need the host run with K = 1: the scheduler decides most (`MultiStepScheduler`); the runner adds what
only it knows (`burst_blocker`: model states other than vLLM's default, multimodal, NaN counting), counted as
single steps with the reason logged once. The broken variant ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT=1 (tests only)
feeds a further step the previous step's input token instead of the token that step sampled (with or without async
scheduling: the further steps are the same code).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from vllm.config.compilation import CUDAGraphMode
from vllm.forward_context import BatchDescriptor, set_forward_context
from vllm.logger import init_logger
from vllm.v1.outputs import AsyncModelRunnerOutput, ModelRunnerOutput
from vllm.v1.worker.gpu.attn_utils import build_slot_mappings_by_layer
from vllm.v1.worker.gpu.input_batch import InputBatch, combine_sampled_and_draft_tokens, prepare_pos_seq_lens
from vllm.v1.worker.gpu.model_states.default import DefaultModelState

from ..counters import Count, bump
from .multistep import BurstPlan, burst_plan, count_burst, unsafe_knobs

logger = init_logger("vllm." + __name__)


@dataclasses.dataclass
class BurstTiming:
    """What a burst's counters need once its tokens are on the host."""

    steps: int
    decode_steps: int
    reason: str | None
    start: float  # perf_counter when the second step was enqueued
    device_start: torch.cuda.Event
    device_end: torch.cuda.Event
    logged: set[str]
    queued_ms: float | None = None  # async scheduling: the host's time to queue the further steps (module docstring)


class BurstOutput(AsyncModelRunnerOutput):
    """A burst's tokens, `[num_reqs, steps]` on the device, copied to the host once on the output copy stream after
    the burst's last step; `get_output` waits for that copy, lists each request's tokens and counts the burst."""

    def __init__(
        self,
        output: ModelRunnerOutput,
        tokens: torch.Tensor,
        timing: BurstTiming,
        main_stream: torch.cuda.Stream,
        copy_stream: torch.cuda.Stream,
    ) -> None:
        self.output = output
        self.tokens = tokens  # held until the copy ran: it runs on another stream than the one that made it
        self.timing = timing
        self.copied = torch.cuda.Event(blocking=True)
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_stream(main_stream)
            self.host_tokens = tokens.to("cpu", non_blocking=True)
            self.copied.record(copy_stream)

    def get_output(self) -> ModelRunnerOutput:
        self.copied.synchronize()  # the copy waited for the main stream: device_end has completed too
        self.output.sampled_token_ids = self.host_tokens.tolist()
        timing = self.timing
        device_ms = timing.device_start.elapsed_time(timing.device_end)
        host_ms = timing.queued_ms
        if host_ms is None:
            host_ms = (time.perf_counter() - timing.start) * 1e3 - device_ms
        count_burst(timing.steps, timing.decode_steps, timing.reason, host_ms, device_ms, timing.logged)
        return self.output


class BurstRunner:
    """What bursts add to vLLM's V2 GPUModelRunner (first in the MRO of gpu_runner.AscendGraphGPUModelRunner)."""

    # Whether this host's bursts compose with vLLM's async scheduling (module docstring); a host that says no is
    # refused by its platform first (graph_mode.configure_decode_steps), this is the runner's own guard.
    bursts_with_async_scheduling = True

    def setup_bursts(self, decode_steps: int) -> None:
        self.ag_decode_steps = decode_steps
        self.ag_burst: BurstPlan | None = None  # the plan of the step between execute_model and sample_tokens
        self.ag_burst_logged: set[str] = set()
        self.ag_stale_input = unsafe_knobs()["stale_input"]
        self.ag_async_scheduling = bool(self.scheduler_config.async_scheduling)  # type: ignore[attr-defined]
        if decode_steps > 1 and self.ag_async_scheduling and not self.bursts_with_async_scheduling:
            raise ValueError(
                f"ascend_graph decode_steps > 1 on this host ({type(self).__name__}) runs without vLLM's async "
                "scheduling: pass --no-async-scheduling (async_scheduling=False)"
            )
        if self.ag_stale_input:
            logger.warning("ascend_graph: ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT=1, bursts feed stale tokens (broken)")

    def burst_blocker(self) -> str | None:
        """Why this runner cannot run a burst's further steps on the device (the step runs with K = 1), or None.
        The platform refuses the configurations that would block every step (docs/multistep.md)."""
        if not hasattr(self.cudagraph_manager, "ag_last_desc"):  # type: ignore[attr-defined]
            return "no ascend_graph graph manager"
        if not isinstance(self.model_state, DefaultModelState):  # type: ignore[attr-defined]
            return f"model state {type(self.model_state).__name__}"  # type: ignore[attr-defined]
        if self.supports_mm_inputs:  # type: ignore[attr-defined]
            return "multimodal inputs"
        if self.sampler is None or self.sampler.compute_nans:  # type: ignore[attr-defined]
            return "NaN counting (VLLM_COMPUTE_NANS_IN_LOGITS)"
        if self.speculator is not None or self.pcp_manager is not None or self.use_dcp:  # type: ignore[attr-defined]
            return "speculative decoding or context parallelism"
        return None

    @torch.inference_mode()
    def execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        plan = None if kwargs.get("dummy_run") else burst_plan(scheduler_output)
        self.ag_burst = None
        if plan is not None and scheduler_output.total_num_scheduled_tokens:
            blocker = self.burst_blocker() if plan.steps > 1 else None
            if plan.steps > 1 and blocker is None:
                self.ag_burst = plan
            else:
                bump(Count.BURST_SINGLE_STEPS)  # the scheduler logged its reasons; the runner logs its own
                if blocker is not None and blocker not in self.ag_burst_logged:
                    self.ag_burst_logged.add(blocker)
                    logger.info("ascend_graph: steps with %s run one decode step per round trip", blocker)
        return super().execute_model(scheduler_output, *args, **kwargs)  # type: ignore[misc]

    @torch.inference_mode()
    def sample_tokens(self, grammar_output: Any) -> Any:
        plan, self.ag_burst = self.ag_burst, None
        state = self.execute_model_state  # type: ignore[attr-defined]
        if plan is None or state is None or grammar_output is not None:
            return super().sample_tokens(grammar_output)  # type: ignore[misc]
        self.execute_model_state = None
        desc = self.cudagraph_manager.ag_last_desc  # type: ignore[attr-defined]
        batch, hidden = state.input_batch, state.hidden_states
        tokens = [self._sample_step(hidden, batch)]
        start = time.perf_counter()
        device_start, device_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        device_start.record()
        for _ in range(plan.steps - 1):
            batch, hidden = self._further_forward(batch, desc)
            tokens.append(self._sample_step(hidden, batch))
        device_end.record()
        queued_ms = (time.perf_counter() - start) * 1e3 if self.ag_async_scheduling else None
        output = ModelRunnerOutput(
            req_ids=batch.req_ids,
            req_id_to_index={req_id: i for i, req_id in enumerate(batch.req_ids)},
            sampled_token_ids=[],
        )
        output.kv_connector_output = self.kv_connector.post_forward(state.finished_req_ids)  # type: ignore[attr-defined]
        timing = BurstTiming(
            plan.steps,
            self.ag_decode_steps,
            plan.reason,
            start,
            device_start,
            device_end,
            self.ag_burst_logged,
            queued_ms,
        )
        joined = torch.cat(tokens, dim=1)  # [num_reqs, steps]: request i's burst in row i
        return BurstOutput(output, joined, timing, self.main_stream, self.output_copy_stream)  # type: ignore[attr-defined]

    def _sample_step(self, hidden: torch.Tensor, batch: InputBatch) -> torch.Tensor:
        """vLLM's sampling of one decode step and its device-side state update; the sampled tokens [num_reqs, 1]."""
        sampler_output, num_sampled, num_rejected = self.sample(hidden, batch, None)  # type: ignore[attr-defined]
        self.postprocess_sampled(  # type: ignore[attr-defined]
            batch.idx_mapping, sampler_output.sampled_token_ids, num_sampled, num_rejected, batch.query_start_loc
        )
        return sampler_output.sampled_token_ids

    def _further_forward(self, previous: InputBatch, desc: Any) -> tuple[InputBatch, torch.Tensor]:
        """The inputs of the next decode step of `previous`'s batch, derived on the device from the state the last
        `postprocess_sampled` left, and its forward; returns the step's batch and hidden states."""
        buffers, states = self.input_buffers, self.req_states  # type: ignore[attr-defined]
        num_reqs = previous.num_reqs
        stale = previous.input_ids[:num_reqs].clone() if self.ag_stale_input else None
        prepare_pos_seq_lens(
            previous.idx_mapping,
            previous.query_start_loc,
            states.num_computed_tokens.gpu,
            buffers.positions,
            buffers.seq_lens,
        )
        logits_indices = self._combine_tokens(previous)
        if stale is not None:
            buffers.input_ids[:num_reqs].copy_(stale)  # the broken variant: the sampled token is not fed back
        batch = self._further_batch(previous, logits_indices)
        return batch, self._forward(batch, desc)

    def _combine_tokens(self, previous: InputBatch) -> torch.Tensor:
        """vLLM's kernel: the next step's input ids from the tokens just sampled; returns the logits indices."""
        buffers, states = self.input_buffers, self.req_states  # type: ignore[attr-defined]
        return combine_sampled_and_draft_tokens(
            buffers.input_ids,
            previous.idx_mapping,
            states.last_sampled_tokens,
            previous.query_start_loc,
            previous.seq_lens,
            states.prefill_len.gpu,
            states.draft_tokens,
            previous.cu_num_logits,
            previous.num_reqs,
            self.model_state.num_new_sampled_tokens_per_step,  # type: ignore[attr-defined]
        )

    def _further_batch(self, previous: InputBatch, logits_indices: torch.Tensor) -> InputBatch:
        """`previous` one token further: the host's sequence-length bound and computed counts one higher per
        request (known without reading the device), the new logits indices; the rest is the first step's batch."""
        upper_bound = previous.seq_lens_cpu_upper_bound.clone()
        upper_bound[: previous.num_reqs] += 1  # each request's sequence grew by the one token fed back
        return dataclasses.replace(
            previous,
            seq_lens_cpu_upper_bound=upper_bound,
            num_computed_tokens_np=previous.num_computed_tokens_np + 1,
            logits_indices=logits_indices,
        )

    def _forward(self, batch: InputBatch, desc: Any) -> torch.Tensor:
        """vLLM's forward of a prepared decode batch (execute_model's, for a batch with no LoRA, multimodal input,
        pipeline or data parallelism: the platform refuses those with decode_steps > 1)."""
        block_tables, slot_mappings = self.prepare_attn(batch)  # type: ignore[attr-defined]
        kv_cache_config = self.kv_cache_config  # type: ignore[attr-defined]
        self.model_state.preprocess_state(  # type: ignore[attr-defined]
            batch,
            block_tables,
            kv_cache_config,
            self.req_states.num_computed_tokens.gpu,  # type: ignore[attr-defined]
        )
        slot_mappings_by_layer = build_slot_mappings_by_layer(slot_mappings, kv_cache_config)
        attn_metadata = self.model_state.prepare_attn(  # type: ignore[attr-defined]
            batch,
            desc.cg_mode,
            block_tables,
            slot_mappings,
            self.attn_groups,  # type: ignore[attr-defined]
            kv_cache_config,
        )
        model_inputs = {
            "input_ids": batch.input_ids,
            "positions": batch.positions,
            "inputs_embeds": None,
            "intermediate_tensors": None,
            **self.model_state.prepare_inputs(batch, self.req_states),  # type: ignore[attr-defined]
        }
        if desc.cg_mode == CUDAGraphMode.FULL:
            return self.cudagraph_manager.run_fullgraph(desc)  # type: ignore[attr-defined]
        descriptor = BatchDescriptor(num_tokens=batch.num_tokens_after_padding, has_lora=False)
        with set_forward_context(
            attn_metadata,
            self.vllm_config,  # type: ignore[attr-defined]
            num_tokens=batch.num_tokens_after_padding,
            cudagraph_runtime_mode=desc.cg_mode,
            batch_descriptor=descriptor,
            slot_mapping=slot_mappings_by_layer,
            is_padding=batch.is_padding,
        ):
            if desc.cg_mode == CUDAGraphMode.PIECEWISE:
                return self.cudagraph_manager.run_pw_graph(self.model, model_inputs)  # type: ignore[attr-defined]
            return self.model(**model_inputs)  # type: ignore[attr-defined]
