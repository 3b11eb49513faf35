"""The CPU lane's bursts of decode steps (decode_steps = K > 1, multistep.py; docs/multistep.md).

vLLM's V1 runner keeps the request state on the host, so each further step of a burst is derived on the host
(`next_step_output`: the same requests, one more computed token each, no new blocks, nothing else) and run through
vLLM's own `execute_model` / `sample_tokens` (input preparation, forward on the CPU stream with the captured
graphs, sampler, bookkeeping): the same computation as K steps of K = 1, hence the same tokens, seeds and
penalties included. Called by the CPU lane's runner (model_runner.py).

With vLLM's async scheduling (mode "forward-async"), a burst whose steps need no host state (greedy, unseeded
sampling without penalties: model_runner's `host_state_reason`) runs as forward-async steps (`run_async_burst`):
each further step is launched like any forward-async step (host prep into a free static set while the previous
step's job still runs, the previous step's sampled tokens scattered into its input ids on the stream), and the
burst's tokens go back through one `BurstAsyncOutput`, read after the last step's job. The runner never reads a
token inside such a burst, so it runs every planned step (the scheduler drops the tokens after a stop and rolls
back what it reserved). A burst whose steps need host state runs as above with vLLM's synchronous sampling; under
async scheduling a further step that raises fails the step (the next step was scheduled after the whole burst).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vllm.logger import init_logger
from vllm.v1.core.sched.output import CachedRequestData, SchedulerOutput
from vllm.v1.outputs import AsyncModelRunnerOutput, ModelRunnerOutput

from .multistep import burst_plan, count_burst, unsafe_knobs

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)


def next_step_output(runner: Any, previous: SchedulerOutput) -> SchedulerOutput:
    """The scheduler output of a burst's next step: the same requests, one more computed token each (the token
    the previous step sampled is this step's input), no new blocks (allocated before the burst), nothing else."""
    req_ids = list(previous.num_scheduled_tokens)
    states = [runner.requests[req_id] for req_id in req_ids]
    cached = CachedRequestData(
        req_ids=req_ids,
        resumed_req_ids=set(),
        new_token_ids=[],
        all_token_ids={},
        new_block_ids=[None] * len(req_ids),
        num_computed_tokens=[state.num_computed_tokens + 1 for state in states],
        num_output_tokens=[len(state.output_token_ids) for state in states],
    )
    return SchedulerOutput(
        scheduled_new_reqs=[],
        scheduled_cached_reqs=cached,
        num_scheduled_tokens=dict.fromkeys(req_ids, 1),
        total_num_scheduled_tokens=len(req_ids),
        scheduled_spec_decode_tokens={},
        scheduled_encoder_inputs={},
        finished_req_ids=set(),
        free_encoder_mm_hashes=[],
        num_common_prefix_blocks=list(previous.num_common_prefix_blocks),
    )


def all_stopped(runner: Any, req_ids: list[str]) -> bool:
    """True when every request of the burst has certainly stopped (max_tokens, or a stop token with no
    min_tokens): further steps would only be dropped. Stop strings are the front end's, never assumed here."""
    for req_id in req_ids:
        state = runner.requests[req_id]
        params = state.sampling_params
        tokens = state.output_token_ids
        if len(tokens) >= params.max_tokens:
            continue
        stops = set(params.stop_token_ids or ())
        if params.eos_token_id is not None:  # None with ignore_eos
            stops.add(params.eos_token_id)
        if tokens and tokens[-1] in stops and not params.min_tokens:
            continue
        return False
    return True


def run_burst(
    runner: Any,
    scheduler_output: SchedulerOutput,
    first_output: Any,
    step: Callable[[SchedulerOutput], Any],
    device_ms: Callable[[], float],
    must_finish: bool = False,
) -> Any:
    """The rest of a burst after its first step (`first_output`, vLLM's output of that step): `step` runs one more
    decode step (vLLM's execute_model and sample_tokens) and returns its output; the tokens of every step are
    joined per request into `first_output`. `device_ms` reads the device time the runner measured so far.
    `must_finish` (async scheduling): a further step that raises is re-raised, not a burst cut short."""
    plan = burst_plan(scheduler_output)
    assert plan is not None and plan.steps > 1
    req_ids = list(scheduler_output.num_scheduled_tokens)
    tokens = {req_id: list(first_output.sampled_token_ids[first_output.req_id_to_index[req_id]]) for req_id in req_ids}
    previous, done, reason = scheduler_output, 1, plan.reason
    start, device_start = time.perf_counter(), device_ms()
    while done < plan.steps:
        if all_stopped(runner, req_ids):
            reason = "all requests stopped"
            break
        previous = next_step_output(runner, previous)
        output, error = _further_step(runner, req_ids, previous, step, must_finish)
        if output is None:
            reason = error
            break
        for req_id in req_ids:
            tokens[req_id].extend(output.sampled_token_ids[output.req_id_to_index[req_id]])
        done += 1
    device = device_ms() - device_start
    host = (time.perf_counter() - start) * 1e3 - device
    count_burst(done, runner.ag.decode_steps, reason, host, device, runner.ag.reasons_logged)
    first_output.sampled_token_ids = [tokens[req_id] for req_id in first_output.req_ids]
    return first_output


def _further_step(
    runner: Any, req_ids: list[str], inner: SchedulerOutput, step: Callable[[SchedulerOutput], Any], must_finish: bool
) -> tuple[Any, str | None]:
    """One further step of a burst: its output, or None and why. A step that raises ends the burst with the tokens
    so far (logged once per error type): the next scheduler output carries the computed and output token counts,
    which resynchronise the runner's state."""
    if unsafe_knobs()["stale_input"]:
        _unfeed_last_tokens(runner, req_ids)
    try:
        return step(inner), None
    except Exception as error:  # noqa: BLE001 - graph mode does not fail a user's request for its own reasons
        runner.execute_model_state = None  # a step that raised between execute and sample
        if must_finish:
            raise
        reason = f"a decode step raised {type(error).__name__}"
        if reason not in runner.ag.reasons_logged:
            runner.ag.reasons_logged.add(reason)
            logger.warning("ascend_graph: a burst ends early (counted as cut short): %r", error)
        return None, reason


def _unfeed_last_tokens(runner: Any, req_ids: list[str]) -> None:
    """The broken variant ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT: the next step reads the previous input token where
    the sampled one should be (the returned tokens and the penalties' history keep the sampled one)."""
    batch = runner.input_batch
    for req_id in req_ids:
        index = batch.req_id_to_index[req_id]
        end = int(batch.num_tokens_no_spec[index])
        batch.token_ids_cpu[index, end - 1] = batch.token_ids_cpu[index, end - 2]


class BurstAsyncOutput(AsyncModelRunnerOutput):
    """The output of a forward-async burst: its steps' async outputs, joined per request when vLLM reads them."""

    def __init__(self, steps: list[AsyncModelRunnerOutput]) -> None:
        self._steps = steps

    def get_output(self) -> ModelRunnerOutput:
        outputs = [step.get_output() for step in self._steps]  # each waits for its step's job
        first = outputs[0]
        first.sampled_token_ids = [
            [token for output in outputs for token in output.sampled_token_ids[output.req_id_to_index[req_id]]]
            for req_id in first.req_ids
        ]
        return first


def run_async_burst(
    runner: Any,
    scheduler_output: SchedulerOutput,
    first_output: Any,
    launch: Callable[[SchedulerOutput], Any],
) -> BurstAsyncOutput:
    """The rest of a forward-async burst after its first step (`first_output`, that step's async output): `launch`
    runs one more step's host part and queues its job (the runner's forward-async step) and returns its async
    output. No token is read here; vLLM reads them all from the returned output. Host time counted is the time to
    launch the further steps (their device time is not measured: reading it would wait for the jobs)."""
    plan = burst_plan(scheduler_output)
    assert plan is not None and plan.steps > 1
    stale = unsafe_knobs()["stale_input"]
    outputs, previous = [first_output], scheduler_output
    start = time.perf_counter()
    for _ in range(plan.steps - 1):
        if stale and len(outputs) >= 2:
            # The broken variant: the next job scatters the tokens of the step before the last one.
            runner.input_batch.prev_sampled_token_ids = outputs[-2].sampled
        previous = next_step_output(runner, previous)
        outputs.append(launch(previous))
    host = (time.perf_counter() - start) * 1e3
    count_burst(plan.steps, runner.ag.decode_steps, plan.reason, host, 0.0, runner.ag.reasons_logged)
    return BurstAsyncOutput(outputs)
