"""K decode steps per host round trip inside vLLM (`additional_config.ascend_graph.decode_steps = K`), CPU lane.

When every request of a batch decodes, the engine core schedules once, the runner runs up to K decode steps back
to back (each step's sampled tokens are the next step's inputs; positions, sequence lengths and slot mappings
advance by one), and the scheduler, the engine core's IPC and the front end's detokenizer run once per burst.
docs/multistep.md has the design and the vLLM seams per version (file:line).

Two halves, each built on vLLM's own interfaces:

- `MultiStepScheduler` (vLLM's `scheduler_config.scheduler_cls`, set by the platform when K > 1) allocates the
  burst's KV slots with every step (vLLM's `num_lookahead_tokens`, K - 1 more), decides each step's burst length
  (`BurstPlan`, carried to the runner on the scheduler output) and, when the runner returns n tokens for a
  request, accounts the n - 1 tokens whose KV the burst computed. Appending the tokens, the per-token stop checks
  (EOS, stop token ids, max_tokens, max_model_len) and dropping the tokens after a stop are vLLM's own
  (`_update_request_with_output`, as for speculative decoding); stop strings are matched per token by the front
  end's detokenizer, which drops the tokens after the match and aborts the request in the engine core (from vLLM
  0.32; before, requests with stop strings run with K = 1: `stop_strings_trimmed`).
- The runner runs the burst: on the CPU lane `cpu_burst.run_burst` (each further step through vLLM's own input
  preparation and sampler, from a scheduler output derived on the host), on CUDA `gpu_burst.BurstRunner` (each
  further step from the device state that vLLM's Model Runner V2 advanced, no host read inside the burst). Both
  count through `count_burst`.

A step runs with K = 1 (counted, its reason logged once) when it prefills, when speculative decoding, structured
output or logprobs are in the batch. Bursts shorten (counted as cut short) to the most tokens any request can
still produce (max_tokens), to what max_model_len leaves, and while requests wait, to the fewest tokens any
running request can still produce, so a waiting request is admitted at a burst boundary no later than a request
finishes.

With vLLM's async scheduling (mode "forward-async": the CPU lane, and CUDA's Model Runner V2, unverified there until
its GPU tests run), the engine core schedules step N+1 before burst N's tokens are known; `AsyncMultiStepScheduler`
(over vLLM's `AsyncScheduler`) uses vLLM's placeholder machinery: a burst of S steps reserves S output placeholders
and S computed tokens at schedule time (vLLM reserves one), so step N+1 feeds the burst's last sampled token at the
position after the burst; a burst that returns fewer tokens rolls the surplus back in `update_from_output` as vLLM
rolls back rejected draft tokens. Where vLLM versions differ (checked by version, `stale_counted_in_tokens`): an
in-flight output of a request preempted meanwhile is stale by tokens in 0.32 (`num_stale_output_tokens`), by
outputs in 0.26 (`async_tokens_to_discard`, which 0.26's `reset_prefix_cache` sets to the request's placeholders:
one per output at K = 1, S per output for a burst, so the scheduler corrects it to the outputs in flight).

Two broken variants exist for the tests only (read in `unsafe_knobs`): ASCEND_GRAPH_UNSAFE_BURST_IGNORES_STOP=1
(the scheduler checks stop once per burst, not per token) and ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT=1 (a further
step's input is the previous step's input token, not the token that step sampled: a token not fed back; under
async scheduling, the tokens of the step before the last one, on the device: cpu_burst.run_async_burst).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import vllm
from vllm.logger import init_logger
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.core.sched.utils import check_stop

from ..counters import Count, bump
from .options import options_of
from .versions import parse

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)

PLAN_ATTRIBUTE = "ascend_graph_burst"  # the scheduler output's attribute that carries the BurstPlan to the runner


@dataclasses.dataclass(frozen=True)
class BurstPlan:
    """How many decode steps the runner runs for one scheduler output, and why fewer than decode_steps."""

    steps: int
    reason: str | None = None


def burst_plan(scheduler_output: Any) -> BurstPlan | None:
    """The plan the scheduler attached to `scheduler_output`, or None (decode_steps = 1, or another scheduler)."""
    return getattr(scheduler_output, PLAN_ATTRIBUTE, None)


def unsafe_knobs() -> dict[str, bool]:
    """The broken variants' switches (tests only), read in one place."""
    return {
        "ignores_stop": os.environ.get("ASCEND_GRAPH_UNSAFE_BURST_IGNORES_STOP") == "1",
        "stale_input": os.environ.get("ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT") == "1",
    }


def stop_strings_trimmed(version: str) -> bool:
    """Whether this vLLM's front end drops the token ids after a stop-string match (docs/multistep.md): 0.32 does
    (`BaseIncrementalDetokenizer.update`, `OutputProcessor._trim_surplus_tokens`), 0.26 keeps every token id of
    the step, so a burst would return token ids that K = 1 never produces. Versions between are unchecked and
    treated as 0.26."""
    return parse(version)[:2] >= (0, 32)


def stale_counted_in_tokens(version: str) -> bool:
    """Whether this vLLM marks the in-flight outputs of a request preempted under async scheduling by tokens
    (0.32: `Request.num_stale_output_tokens`, `is_stale`) or, as 0.26 does, by outputs to discard
    (`Request.async_tokens_to_discard`, set only by `reset_prefix_cache(reset_running_requests=True)`; its ordinary
    preemption keeps the outputs). Versions between are unchecked and treated as 0.26."""
    return parse(version)[:2] >= (0, 32)


def single_step_reason(request: Any, trims_stop_strings: bool = True) -> str | None:
    """Why a request's steps need the host after every token (run with K = 1), or None."""
    if request.pooling_params is not None or request.sampling_params is None:
        return "pooling"
    params = request.sampling_params
    if params.logprobs is not None or params.prompt_logprobs is not None:
        return "logprobs"
    if params.structured_outputs is not None:
        return "structured output"
    if params.stop and not trims_stop_strings:
        return "stop strings (this vLLM keeps token ids past a match)"
    return None


class _BurstScheduling:
    """The burst rules over vLLM's scheduler (the module docstring has them); mixed into `Scheduler` or, with
    vLLM's async scheduling, `AsyncScheduler`."""

    reserves_placeholders = False  # async scheduling: a burst's tokens are placeholders until its output comes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decode_steps: int = options_of(self.vllm_config).decode_steps
        # Every step allocates the slots of the K - 1 tokens a burst feeds back, as vLLM allocates draft slots.
        self.num_lookahead_tokens += self.decode_steps - 1
        self.ignores_stop = unsafe_knobs()["ignores_stop"]
        self.trims_stop_strings = stop_strings_trimmed(getattr(vllm, "__version__", "0"))
        self.stale_in_tokens = stale_counted_in_tokens(getattr(vllm, "__version__", "0"))
        self.extra_in_flight: dict[str, int] = {}  # async: per request, the placeholders its bursts in flight add
        self._reasons_logged: set[str] = set()
        logger.info("ascend_graph: up to %d decode steps per host round trip", self.decode_steps)
        if self.ignores_stop:
            logger.warning("ascend_graph: ASCEND_GRAPH_UNSAFE_BURST_IGNORES_STOP=1, bursts ignore stops (broken)")

    def schedule(self, *args: Any, **kwargs: Any) -> SchedulerOutput:
        output = super().schedule(*args, **kwargs)
        plan = self._plan(output)
        setattr(output, PLAN_ATTRIBUTE, plan)
        if self.reserves_placeholders and plan.steps > 1:
            # vLLM reserved one output placeholder and one computed token per request (_update_after_schedule);
            # the burst computes the KV of steps - 1 more tokens and samples steps - 1 more.
            for req_id in output.num_scheduled_tokens:
                request = self.requests[req_id]
                request.num_computed_tokens += plan.steps - 1
                request.num_output_placeholders += plan.steps - 1
                self.extra_in_flight[req_id] = self.extra_in_flight.get(req_id, 0) + plan.steps - 1
        return output

    def reset_prefix_cache(self, reset_running_requests: bool = False, *args: Any, **kwargs: Any) -> Any:
        # vLLM 0.26 with reset_running_requests preempts every running request and marks as many of its in-flight
        # outputs for discarding as it has placeholders; a burst's output holds steps of them (module docstring).
        corrected = self.reserves_placeholders and reset_running_requests and not self.stale_in_tokens
        running = list(self.running) if corrected else []
        result = super().reset_prefix_cache(reset_running_requests, *args, **kwargs)
        for request in running:
            request.async_tokens_to_discard -= self.extra_in_flight.get(request.request_id, 0)
        return result

    def _plan(self, output: SchedulerOutput) -> BurstPlan:
        if not output.total_num_scheduled_tokens:
            return BurstPlan(1, "empty step")
        reason = self._single_step_reason(output)
        if reason is not None:
            if reason not in self._reasons_logged:
                self._reasons_logged.add(reason)
                logger.info("ascend_graph: steps with %s run one decode step per round trip", reason)
            return BurstPlan(1, reason)
        requests = [self.requests[req_id] for req_id in output.num_scheduled_tokens]
        # After schedule() a decoding request's num_tokens counts the token this step feeds in; each further
        # step adds one, and vLLM's runner refuses tokens past max_model_len. With async scheduling the tokens of
        # earlier steps still in flight are placeholders (one of them is this step's own token).
        ahead = [max(request.num_output_placeholders - 1, 0) for request in requests]
        room = min(
            self.max_model_len - request.num_tokens - extra for request, extra in zip(requests, ahead, strict=True)
        )
        left = [
            request.max_tokens - request.num_output_tokens - extra
            for request, extra in zip(requests, ahead, strict=True)
        ]
        # Async scheduling schedules one more step of a request whose placeholders already reach max_tokens
        # (vLLM's check counts on one placeholder only, as if the rest were drafts); its output is dropped, so it
        # bounds no burst.
        live = [tokens for tokens in left if tokens > 0] or [1]
        limits = {"max_model_len": room, "max_tokens": max(live)}
        if self.get_request_counts()[1]:
            limits["requests waiting"] = min(live)
        steps = max(1, min(self.decode_steps, *limits.values()))
        if steps == self.decode_steps:
            return BurstPlan(steps)
        return BurstPlan(steps, min(limits, key=lambda name: limits[name]))

    def _single_step_reason(self, output: SchedulerOutput) -> str | None:
        if output.scheduled_new_reqs:
            return "prefill"
        if output.scheduled_spec_decode_tokens:
            return "speculative decoding"
        if output.has_structured_output_requests:
            return "structured output"
        for req_id, num_tokens in output.num_scheduled_tokens.items():
            request = self.requests[req_id]
            if num_tokens != 1 or request.is_prefill_chunk:
                return "prefill"
            reason = single_step_reason(request, self.trims_stop_strings)
            if reason is not None:
                return reason
        return None

    def update_from_output(self, scheduler_output: SchedulerOutput, model_runner_output: Any) -> Any:
        plan = burst_plan(scheduler_output)
        sampled = model_runner_output.sampled_token_ids
        if plan is not None and plan.steps > 1 and self.reserves_placeholders:
            for req_id in scheduler_output.num_scheduled_tokens:  # this output is no longer in flight
                left = self.extra_in_flight.pop(req_id, 0) - (plan.steps - 1)
                if left > 0:
                    self.extra_in_flight[req_id] = left
        if plan is not None and plan.steps > 1 and sampled:
            for req_id in scheduler_output.num_scheduled_tokens:
                request = self.requests.get(req_id)
                index = model_runner_output.req_id_to_index.get(req_id)
                if request is None or request.is_finished() or index is None:
                    continue
                self._account_burst(request, plan.steps, len(sampled[index]))
        return super().update_from_output(scheduler_output, model_runner_output)

    def _account_burst(self, request: Any, steps: int, returned: int) -> None:
        """The computed tokens of a burst that returned `returned` tokens for `request`. Synchronous: the burst
        computed the KV of the returned - 1 tokens it fed back (the last one is the next step's input). Async: the
        schedule reserved `steps`; fewer came back (a burst cut short), so the surplus rolls back as vLLM rolls back
        rejected drafts, unless the output is stale (preempted meanwhile: vLLM reset the counts already; 0.26's
        ordinary preemption resets the computed tokens only, so they stay at zero). A request that stops among the
        tokens is freed, so its count no longer matters."""
        if not self.reserves_placeholders:
            request.num_computed_tokens += max(returned - 1, 0)
            return
        stale = request.num_stale_output_tokens if self.stale_in_tokens else request.async_tokens_to_discard
        if stale > 0:
            return
        surplus = steps - max(returned, 1)  # vLLM itself settles the one placeholder of a step that returned none
        request.num_computed_tokens = max(request.num_computed_tokens - surplus, 0)
        request.num_output_placeholders -= surplus

    def _update_request_with_output(self, request: Any, new_token_ids: list[int], *args: Any, **kwargs: Any) -> Any:
        # vLLM 0.32 passes is_stale (async scheduling), 0.26 does not: whatever comes passes through.
        if not self.ignores_stop or len(new_token_ids) < 2:
            return super()._update_request_with_output(request, new_token_ids, *args, **kwargs)
        # The broken variant: every token of the burst is kept, stop checked once after the last.
        for token in new_token_ids:
            request.append_output_token_ids(token)
        if self.reserves_placeholders:
            request.num_output_placeholders -= len(new_token_ids)
        return new_token_ids, check_stop(request, self.max_model_len)


class MultiStepScheduler(_BurstScheduling, Scheduler):
    """vLLM's scheduler with bursts of decode steps (the module docstring has the rules)."""


class AsyncMultiStepScheduler(_BurstScheduling, AsyncScheduler):
    """vLLM's async scheduler with bursts of decode steps: a burst's tokens are output placeholders until its
    output comes back (the module docstring has the rules)."""

    reserves_placeholders = True


def count_burst(
    done: int, decode_steps: int, reason: str | None, host_ms: float, device_ms: float, logged: set[str]
) -> None:
    """The counters of one burst (host and device time are those of its further steps); the first burst cut short
    for each reason is logged."""
    bump(Count.BURSTS)
    bump(Count.BURST_STEPS, done)
    bump(Count.BURST_DEVICE_US, int(device_ms * 1e3))
    bump(Count.BURST_HOST_US, int(max(host_ms, 0.0) * 1e3))
    if done < decode_steps:
        bump(Count.BURSTS_CUT_SHORT)
        if f"cut short: {reason}" not in logged:
            logged.add(f"cut short: {reason}")
            logger.info(
                "ascend_graph: a burst cut short to %d of %d steps: %s (logged once)", done, decode_steps, reason
            )
