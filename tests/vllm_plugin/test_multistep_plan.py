"""decode_steps (vllm_plugin/multistep.py), fast: the option, the platform's choices and refusals, the burst plan
and the scheduler's accounting of a burst's tokens, over stand-ins for vLLM's requests and scheduler."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("vllm")


def test_decode_steps_option_is_validated() -> None:
    from ascend_graph.vllm_plugin.options import AscendGraphOptions

    assert AscendGraphOptions.parse(None).decode_steps == 1
    assert AscendGraphOptions.parse({"ascend_graph": {"decode_steps": 4}}).decode_steps == 4
    for bad in (0, -2, 1.5, "4", True):
        with pytest.raises(ValueError, match=r"decode_steps=.* is not allowed; allowed values are integers >= 1"):
            AscendGraphOptions.parse({"ascend_graph": {"decode_steps": bad}})


def test_decode_steps_sets_the_scheduler_per_mode_and_refuses_what_cannot_work() -> None:
    from types import SimpleNamespace

    from ascend_graph.vllm_plugin.options import AscendGraphOptions, Mode
    from ascend_graph.vllm_plugin.platform import ASYNC_SCHEDULER, SCHEDULER, configure_decode_steps

    def asked(mode: Mode) -> AscendGraphOptions:
        return AscendGraphOptions(enabled=True, mode=mode, decode_steps=4)

    def config(scheduler_cls: str | None = None, pipeline: int = 1) -> Any:
        return SimpleNamespace(
            parallel_config=SimpleNamespace(pipeline_parallel_size=pipeline),
            scheduler_config=SimpleNamespace(scheduler_cls=scheduler_cls, async_scheduling=True),
        )

    with pytest.raises(ValueError, match=r"another scheduler_cls \('my.Scheduler'\)"):
        configure_decode_steps(config("my.Scheduler"), asked(Mode.SYNC))
    with pytest.raises(ValueError, match=r"does not support pipeline parallelism"):
        configure_decode_steps(config(pipeline=2), asked(Mode.FORWARD_ASYNC))
    # "sync": vLLM's synchronous loop; "forward-async": vLLM's async scheduling kept, the placeholder scheduler.
    vllm_config = config()
    configure_decode_steps(vllm_config, asked(Mode.SYNC))
    assert vllm_config.scheduler_config.scheduler_cls == SCHEDULER
    assert vllm_config.scheduler_config.async_scheduling is False
    vllm_config = config()
    configure_decode_steps(vllm_config, asked(Mode.FORWARD_ASYNC))
    assert vllm_config.scheduler_config.scheduler_cls == ASYNC_SCHEDULER
    assert vllm_config.scheduler_config.async_scheduling is True


def _plan(
    requests: dict[str, Any], waiting: int = 0, decode_steps: int = 8, trims_stop_strings: bool = True, **output: Any
) -> Any:
    """MultiStepScheduler's plan for one scheduler output, over stand-ins for vLLM's requests and scheduler."""
    from types import SimpleNamespace

    from ascend_graph.vllm_plugin.multistep import MultiStepScheduler

    scheduler = SimpleNamespace(
        decode_steps=decode_steps,
        requests=requests,
        max_model_len=256,
        get_request_counts=lambda: (len(requests), waiting),
        _reasons_logged=set(),
        trims_stop_strings=trims_stop_strings,
    )
    scheduler._single_step_reason = MultiStepScheduler._single_step_reason.__get__(scheduler)
    fields = {
        "scheduled_new_reqs": [],
        "scheduled_spec_decode_tokens": {},
        "has_structured_output_requests": False,
        "num_scheduled_tokens": dict.fromkeys(requests, 1),
        "total_num_scheduled_tokens": len(requests),
    }
    return MultiStepScheduler._plan(scheduler, SimpleNamespace(**{**fields, **output}))


def _request(
    num_tokens: int = 20,
    left: int = 30,
    logprobs: int | None = None,
    stop: list[str] | None = None,
    placeholders: int = 0,
) -> Any:
    from types import SimpleNamespace

    params = SimpleNamespace(logprobs=logprobs, prompt_logprobs=None, structured_outputs=None, stop=stop or [])
    return SimpleNamespace(
        num_tokens=num_tokens,
        max_tokens=left + 5,
        num_output_tokens=5,
        num_output_placeholders=placeholders,
        is_prefill_chunk=False,
        pooling_params=None,
        sampling_params=params,
    )


def test_burst_plan_lengths_and_reasons() -> None:
    from ascend_graph.vllm_plugin.multistep import BurstPlan

    assert _plan({"a": _request(), "b": _request()}) == BurstPlan(8)
    # The request with the most tokens left bounds the burst; max_model_len bounds it for every request.
    assert _plan({"a": _request(left=3), "b": _request(left=5)}) == BurstPlan(5, "max_tokens")
    assert _plan({"a": _request(num_tokens=253), "b": _request()}) == BurstPlan(3, "max_model_len")
    # Requests waiting: no longer than the first running request that certainly finishes.
    assert _plan({"a": _request(left=2), "b": _request()}, waiting=1) == BurstPlan(2, "requests waiting")
    assert _plan({"a": _request(left=2), "b": _request()}, waiting=0) == BurstPlan(8)
    # What needs the host after every token runs one step.
    assert _plan({"a": _request(), "b": _request(logprobs=1)}) == BurstPlan(1, "logprobs")
    assert _plan({"a": _request()}, scheduled_new_reqs=[object()]) == BurstPlan(1, "prefill")
    assert _plan({"a": _request()}, num_scheduled_tokens={"a": 7}) == BurstPlan(1, "prefill")
    assert _plan({"a": _request()}, scheduled_spec_decode_tokens={"a": [1]}) == BurstPlan(1, "speculative decoding")
    assert _plan({"a": _request()}, has_structured_output_requests=True) == BurstPlan(1, "structured output")
    assert _plan({}, total_num_scheduled_tokens=0) == BurstPlan(1, "empty step")


def test_stop_strings_run_one_step_where_the_front_end_keeps_token_ids_past_a_match() -> None:
    """vLLM 0.26's detokenizer keeps every token id of a step past a stop-string match (0.32's drops them): there
    a request with stop strings must run with K = 1 or its token ids would differ from K = 1 (docs/multistep.md)."""
    from ascend_graph.vllm_plugin.multistep import BurstPlan, stop_strings_trimmed

    assert not stop_strings_trimmed("0.26.0") and stop_strings_trimmed("0.32.0+cpu") and stop_strings_trimmed("0.34.1")
    requests = {"a": _request(), "b": _request(stop=["ab"])}
    reason = "stop strings (this vLLM keeps token ids past a match)"
    assert _plan(requests, trims_stop_strings=False) == BurstPlan(1, reason)
    assert _plan(requests, trims_stop_strings=True) == BurstPlan(8)
    assert _plan({"a": _request()}, trims_stop_strings=False) == BurstPlan(8)


def test_burst_plan_counts_tokens_still_in_flight_under_async_scheduling() -> None:
    """With async scheduling a request's earlier steps may still be in flight (output placeholders; one of them is
    this step's own token): they count against max_tokens and max_model_len, and a request whose placeholders
    already reach max_tokens (scheduled once more by vLLM, its output dropped) bounds no burst."""
    from ascend_graph.vllm_plugin.multistep import BurstPlan

    # 30 tokens left, 1 + 4 in flight (the previous burst's 4 and this step's own): 26 more at most.
    assert _plan({"a": _request(left=30, placeholders=5)}, decode_steps=32) == BurstPlan(26, "max_tokens")
    assert _plan({"a": _request(num_tokens=240, placeholders=9)}, decode_steps=32) == BurstPlan(8, "max_model_len")
    done = _request(left=4, placeholders=5)  # its 4 tokens left are all in flight
    assert _plan({"a": done, "b": _request(left=6), "c": _request()}, waiting=1) == BurstPlan(6, "requests waiting")
    assert _plan({"a": done}) == BurstPlan(1, "max_tokens")


def _accounting(asynchronous: bool, computed: int, placeholders: int, stale: int = 0, version: str = "0.32.0") -> Any:
    """The scheduler's accounting over stand-ins; `stale` is the request's stale mark of that vLLM version (0.32:
    stale tokens; 0.26: outputs to discard, and the other field absent, as in that version's Request)."""
    from types import SimpleNamespace

    from ascend_graph.vllm_plugin.multistep import AsyncMultiStepScheduler, MultiStepScheduler, stale_counted_in_tokens

    cls = AsyncMultiStepScheduler if asynchronous else MultiStepScheduler
    in_tokens = stale_counted_in_tokens(version)
    scheduler = SimpleNamespace(reserves_placeholders=cls.reserves_placeholders, stale_in_tokens=in_tokens)
    mark = {"num_stale_output_tokens": stale} if in_tokens else {"async_tokens_to_discard": stale}
    request = SimpleNamespace(num_computed_tokens=computed, num_output_placeholders=placeholders, **mark)
    return scheduler, request, cls._account_burst


def test_burst_accounting_synchronous_and_with_placeholders() -> None:
    """Synchronous: the burst's n tokens computed the KV of the n - 1 it fed back. Async: the schedule reserved the
    whole burst (computed tokens and placeholders); a burst that returned fewer rolls the surplus back, as vLLM
    rolls back rejected drafts, except for a stale output (preempted meanwhile: vLLM reset the counts)."""
    scheduler, request, account = _accounting(False, computed=20, placeholders=0)
    account(scheduler, request, 4, 3)
    assert (request.num_computed_tokens, request.num_output_placeholders) == (22, 0)
    # Reserved 4 (vLLM's one + 3), one more step in flight behind it (1 placeholder): 2 came back.
    scheduler, request, account = _accounting(True, computed=25, placeholders=5)
    account(scheduler, request, 4, 2)
    assert (request.num_computed_tokens, request.num_output_placeholders) == (23, 3)  # vLLM then takes 2
    scheduler, request, account = _accounting(True, computed=25, placeholders=5)
    account(scheduler, request, 4, 4)
    assert (request.num_computed_tokens, request.num_output_placeholders) == (25, 5)
    scheduler, request, account = _accounting(True, computed=25, placeholders=5)
    account(scheduler, request, 4, 0)  # no token: vLLM settles the step's own placeholder
    assert (request.num_computed_tokens, request.num_output_placeholders) == (22, 2)
    scheduler, request, account = _accounting(True, computed=0, placeholders=0, stale=1)
    account(scheduler, request, 4, 2)
    assert (request.num_computed_tokens, request.num_output_placeholders) == (0, 0)


def test_burst_accounting_reads_the_stale_mark_of_each_vllm_version() -> None:
    """vLLM 0.26 (the CUDA lane) marks a preempted request's in-flight outputs as outputs to discard
    (`async_tokens_to_discard`), 0.32 as stale tokens; the rollback skips a stale output in both. 0.26's ordinary
    preemption resets the computed tokens and keeps the output: the rollback leaves them at zero."""
    from ascend_graph.vllm_plugin.multistep import stale_counted_in_tokens

    assert not stale_counted_in_tokens("0.26.0") and stale_counted_in_tokens("0.32.0+cpu")
    scheduler, request, account = _accounting(True, computed=0, placeholders=0, stale=1, version="0.26.0")
    account(scheduler, request, 4, 4)  # discarded by vLLM's AsyncScheduler: nothing to roll back
    assert (request.num_computed_tokens, request.num_output_placeholders) == (0, 0)
    scheduler, request, account = _accounting(True, computed=25, placeholders=5, version="0.26.0")
    account(scheduler, request, 4, 2)
    assert (request.num_computed_tokens, request.num_output_placeholders) == (23, 3)
    scheduler, request, account = _accounting(True, computed=0, placeholders=5, version="0.26.0")  # preempted
    account(scheduler, request, 4, 2)
    assert (request.num_computed_tokens, request.num_output_placeholders) == (0, 3)


class _Vllm026ResetScheduler:
    """Stands in for vLLM 0.26's scheduler around a prefix-cache reset (scheduler.py:2326-2354): every running
    request preempted, as many in-flight outputs marked for discarding as it has placeholders."""

    def __init__(self, requests: dict[str, Any]) -> None:
        self.requests = requests
        self.running = list(requests.values())

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        if reset_running_requests:
            for request in self.running:
                request.async_tokens_to_discard = request.num_output_placeholders
                request.num_output_placeholders = 0
            self.running = []
        return True

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> None:
        pass


def test_a_prefix_cache_reset_on_vllm_026_discards_the_outputs_in_flight_not_their_tokens() -> None:
    """Two bursts of 4 and a step of 1 in flight: 9 placeholders, 3 outputs. vLLM 0.26 would discard 9 outputs (the
    6 after these three being live ones); the scheduler corrects it to 3. Outputs that come back drain the count
    of extra placeholders in flight; 0.32 (stale tokens) and a reset that keeps the running requests are untouched."""
    from types import SimpleNamespace

    from ascend_graph.vllm_plugin.multistep import PLAN_ATTRIBUTE, AsyncMultiStepScheduler, BurstPlan, _BurstScheduling

    cls = type("Scheduler", (_BurstScheduling, _Vllm026ResetScheduler), {"reserves_placeholders": True})

    def scheduler(version_in_tokens: bool) -> Any:
        request = SimpleNamespace(request_id="a", num_output_placeholders=9, async_tokens_to_discard=0)
        made = object.__new__(cls)  # the burst rules' __init__ reads a vllm_config: its fields are set here
        _Vllm026ResetScheduler.__init__(made, {"a": request})
        made.stale_in_tokens, made.extra_in_flight = version_in_tokens, {"a": 6}
        return made, request

    made, request = scheduler(False)
    made.reset_prefix_cache(reset_running_requests=False)
    assert request.async_tokens_to_discard == 0 and request.num_output_placeholders == 9
    made.reset_prefix_cache(reset_running_requests=True)
    assert request.async_tokens_to_discard == 3 and request.num_output_placeholders == 0
    made, request = scheduler(True)
    made.reset_prefix_cache(True)
    assert request.async_tokens_to_discard == 9  # 0.32 marks stale tokens instead; this field is not its own
    # Each burst output that comes back takes its extra placeholders out of the count, whatever became of it.
    output = SimpleNamespace(num_scheduled_tokens={"a": 1}, **{PLAN_ATTRIBUTE: BurstPlan(4)})
    made.update_from_output(output, SimpleNamespace(sampled_token_ids=[]))
    assert made.extra_in_flight == {"a": 3}
    made.update_from_output(output, SimpleNamespace(sampled_token_ids=[]))
    assert made.extra_in_flight == {}
    assert AsyncMultiStepScheduler.reserves_placeholders
