"""decode_steps = K > 1 on the GPU lane (vLLM 0.26.0's Model Runner V2, gpu_burst.py): bursts of K decode steps per
host round trip, the further steps on the device, give the tokens of K = 1.

One engine per configuration (about 30 s each: eleven in all), mode "sync" with vLLM's async scheduling off as the
user passes it and mode "forward-async" with it on (vLLM's AsyncScheduler under ascend_graph's burst rules: a
burst's tokens are placeholders, the next burst is queued while this one runs; these runs under
ASCEND_GRAPH_STRESS_DELAY_MS=3, each step late on the host and on the device by a random 0..3 ms),
FULL_AND_PIECEWISE with capture sizes [1, 2, 4, 8], the tiny float32 Qwen3, the 17 prompts and
max_tokens 32..80 of test_llm_graph_mode (not multiples of any K, so bursts are cut short at max_tokens; decode
batches shrink 17 -> 1, through sizes above the largest capture size, which run eagerly, and FULL sizes). Even
prompts decode greedily, odd ones sample with per-request seeds (temperature, top-k, top-p; repetition and
presence penalties on some), all in the same batches.

- Greedy tokens of K = 2, 4, 8 equal eager's; the K = 1 graph run equals eager too (and test_gpu_vllm shows it for
  every prompt greedy). Seeded tokens of K = 2, 4, 8 equal K = 1's (seeds are (seed, position) keyed in 0.26's
  sampler, penalties read device counts: nothing differs). Counters: bursts ran, with more than one step each on
  average, device time measured. The same with async scheduling on, against the same references (sync eager and
  sync K = 1; async K = 1 is checked against them first).
- The broken variant ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT=1 (a further step reads the previous input token, not
  the one just sampled) gives other greedy tokens, with async scheduling off and on.
Run by `bench/gpu_lane.sh test` (group b) or `bench/gpu_lane.sh quick burst`; skipped where vLLM has no CUDA. Not
run yet on a GPU: until it is, bursts on CUDA (with or without async scheduling) are unverified.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU and vLLM for CUDA (the GPU lane: bench/gpu_lane.sh)", allow_module_level=True)

from .test_gpu_vllm import ENGINE, FULL_AND_PIECEWISE, model_dir  # noqa: E402, F401 - the lane's fixture, environment
from .test_llm_graph_mode import MAX_TOKENS, PROMPTS  # noqa: E402

pytestmark = pytest.mark.gpu_vllm

SEEDED = [i for i in range(len(PROMPTS)) if i % 2]
GREEDY = [i for i in range(len(PROMPTS)) if not i % 2]


def _params() -> list[Any]:
    from vllm import SamplingParams

    params = []
    for i, max_tokens in enumerate(MAX_TOKENS):
        if i in GREEDY:
            params.append(SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))
            continue
        penalties = {"repetition_penalty": 1.2, "presence_penalty": 0.5} if i % 3 == 1 else {}
        params.append(
            SamplingParams(
                max_tokens=max_tokens, temperature=0.9, top_k=40, top_p=0.9, seed=100 + i, ignore_eos=True, **penalties
            )
        )
    return params


def run(
    path: Path, decode_steps: int | None, asynchronous: bool = False, **engine_args: Any
) -> tuple[list[list[int]], dict[str, int]]:
    """Tokens of every prompt and the worker's counters; `decode_steps` None: eager, no ascend_graph graphs.
    `asynchronous`: vLLM's async scheduling on (mode "forward-async"), else off (mode "sync"), as the user sets it."""
    from vllm import LLM

    from ascend_graph.vllm_plugin import worker_counters

    mode = "forward-async" if asynchronous else "sync"
    if decode_steps is None:
        engine_args["enforce_eager"] = True
    else:
        engine_args["compilation_config"] = FULL_AND_PIECEWISE
        engine_args["additional_config"] = {"ascend_graph": {"mode": mode, "decode_steps": decode_steps}}
    llm = LLM(model=str(path), **{**ENGINE, "async_scheduling": asynchronous, **engine_args})
    outputs = llm.generate(PROMPTS, _params())
    (counts,) = llm.collective_rpc(worker_counters)
    tokens = [list(output.outputs[0].token_ids) for output in outputs]
    del llm
    gc.collect()
    return tokens, counts


def _differ(tokens: list[list[int]], reference: list[list[int]], which: list[int]) -> list[int]:
    return [i for i in which if tokens[i] != reference[i]]


@pytest.fixture(scope="module")
def references(model_dir: Path) -> dict[str, list[list[int]]]:  # noqa: F811 - the shared fixture, used
    eager, _ = run(model_dir, None)
    k1, counts = run(model_dir, 1)
    assert len({tuple(eager[i]) for i in GREEDY}) > 1, "the prompts must give different answers"
    assert not _differ(k1, eager, GREEDY), "K = 1 graphs differ from eager"
    assert counts.get("replays", 0) > 0 and counts.get("bursts", 0) == 0, counts
    return {"eager": eager, "k1": k1}


STRESS = "3"  # ASCEND_GRAPH_STRESS_DELAY_MS of the async runs (gpu_runner.py): each step late by 0..3 ms, at random


def test_async_k1_equals_sync_references(
    model_dir: Path,  # noqa: F811
    references: dict[str, list[list[int]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The async runs' references are the sync ones: K = 1 with async scheduling gives their tokens."""
    monkeypatch.setenv("ASCEND_GRAPH_STRESS_DELAY_MS", STRESS)
    tokens, counts = run(model_dir, 1, asynchronous=True)
    assert not _differ(tokens, references["eager"], GREEDY), "async K = 1 greedy prompts differ from eager"
    assert not _differ(tokens, references["k1"], SEEDED), "async K = 1 seeded prompts differ from sync K = 1"
    assert counts.get("bursts", 0) == 0, counts


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("decode_steps", [2, 4, 8])
def test_burst_tokens_equal_k1_and_eager(
    model_dir: Path,  # noqa: F811
    references: dict[str, list[list[int]]],
    decode_steps: int,
    asynchronous: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if asynchronous:
        monkeypatch.setenv("ASCEND_GRAPH_STRESS_DELAY_MS", STRESS)
    tokens, counts = run(model_dir, decode_steps, asynchronous)
    assert [len(t) for t in tokens] == MAX_TOKENS
    assert not _differ(tokens, references["eager"], GREEDY), "greedy prompts differ from eager"
    assert not _differ(tokens, references["k1"], SEEDED), "seeded prompts differ from K = 1"
    assert counts.get("bursts", 0) > 0 and counts["burst_steps"] > counts["bursts"], counts  # > 1 step per burst
    assert counts["burst_device_us"] > 0 and counts["replays"] > 0, counts
    assert counts.get("burst_single_steps", 0) > 0, counts  # the prefill steps
    if decode_steps == 8:
        assert counts.get("bursts_cut_short", 0) > 0, counts  # max_tokens 32..80 are no multiples of 8 throughout


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_burst_with_stale_input_gives_other_tokens(
    model_dir: Path,  # noqa: F811
    references: dict[str, list[list[int]]],
    monkeypatch: pytest.MonkeyPatch,
    asynchronous: bool,
) -> None:
    """The broken variant (a further step reads the previous input token, not the one just sampled)."""
    monkeypatch.setenv("ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT", "1")
    tokens, counts = run(model_dir, 4, asynchronous)
    assert counts.get("bursts", 0) > 0, counts
    assert _differ(tokens, references["eager"], GREEDY), "the broken variant gave eager's tokens"
