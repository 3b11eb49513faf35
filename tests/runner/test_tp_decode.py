"""Tensor parallel on the CPU lane: two processes, gloo, the tiny shape.

TP=2 captured by the runner (sync, and forward-async with random host and device delays drawn differently on each
rank), TP=2 eager and TP=2 through torch.compile(backend="ascend_graph") must sample exactly the tokens of TP=1
eager, on both ranks; the same model without its all-reduces must not (so the comparison can fail); a rank that
waits on a collective the other never joins must end in a watchdog failure naming the phase, not a stuck job.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from ascend_graph.device import get_device
from ascend_graph.models.qwen3 import SHAPES, PagedQwen3Decoder
from ascend_graph.models.qwen3_tp import TensorParallel, build_tp_paged_decoder, local_shape, shard
from ascend_graph.runner import GraphRunner, RunnerConfig
from ascend_graph.runner.distributed import Watchdog, init_tensor_parallel, spawn
from ascend_graph.runner.harness import DecodeHarness, Workload, paged_step
from bench.tp_decode import PRESETS, worker
from bench.tp_session import WorkloadSpec

# The CPU preset's traffic: 8 requests arriving over the steps at up to 4 rows, 2-14 new tokens each.
OPTIONS = dataclasses.replace(
    PRESETS["cpu"], check=WorkloadSpec(rounds=2, prompt_len=(0, 20), new_tokens=(2, 14), arrivals_per_row=0.25)
)


@pytest.fixture(scope="module")
def session() -> list[dict]:
    """One two-process session for all the checks below: ~30 s alone on two cores, ~55 s on a loaded machine."""
    started = time.monotonic()
    results = spawn(worker, 2, (OPTIONS, None), timeout_s=240)
    results[0]["elapsed_s"] = time.monotonic() - started
    return results


def _runs(result: dict, part: str) -> dict[str, dict]:
    return {run["label"]: run for run in result[part]}


@pytest.mark.slow
def test_tp2_tokens_equal_tp1_eager_on_both_ranks(session: list[dict]) -> None:
    for result in session:
        assert result["ok"], result["failures"]
        runs = _runs(result, "tokens")
        assert set(runs) == {
            "tp1 eager sync b4",
            "tp2 graph sync b4",
            "tp2 graph forward-async delays b4",
            "tp2 eager sync b4",
        }
        for label, run in runs.items():
            assert run["ranks_agree"], label
            if label != "tp1 eager sync b4":
                assert run["tokens_equal_reference"] and run["first_mismatch"] is None, (label, run["first_mismatch"])
        reference = runs["tp1 eager sync b4"]["per_rank"][0]
        assert reference["requests"] == 8 and reference["steps"] >= 15  # several batch sizes came through


@pytest.mark.slow
def test_forward_async_ran_with_different_delays_on_each_rank(session: list[dict]) -> None:
    run = _runs(session[0], "tokens")["tp2 graph forward-async delays b4"]
    figures = run["per_rank"]
    assert all(rank["mode"] == "forward-async" and rank["graph"] and rank["delays"] for rank in figures)
    assert figures[0]["delay_seed"] != figures[1]["delay_seed"]
    assert figures[0]["tokens_digest"] == figures[1]["tokens_digest"]


@pytest.mark.slow
def test_ascend_graph_compiled_tp2_replays_and_matches(session: list[dict]) -> None:
    run = _runs(session[0], "reduced")["reduced tp2 ascend_graph-compiled sync b4"]
    assert run["tokens_equal_reference"] and run["ranks_agree"]
    for rank in run["per_rank"]:
        assert rank["counters"]["replays"] >= rank["steps"] - 1  # every step served by a replay
        assert rank["counters"]["eager_calls"] == 0 and rank["counters"]["eager_fallbacks"] == 0


@pytest.mark.slow
def test_without_all_reduce_tokens_differ(session: list[dict]) -> None:
    """The broken variant: row-parallel partial sums used unreduced. The comparison must catch it."""
    run = _runs(session[0], "reduced")["reduced tp2 NO all-reduce graph sync b4"]
    assert run["tokens_equal_reference"] is False and run["first_mismatch"] is not None
    assert not run["ranks_agree"]  # each rank saw only its half


@pytest.mark.slow
def test_float32_logits_within_tolerance(session: list[dict]) -> None:
    logits = session[0]["logits"]["float32"]
    assert logits["max_abs_diff"] <= logits["atol"]
    assert session[0]["backend"] == "gloo" and session[0]["world_size"] == 2
    assert session[0]["multicast"] == {
        "NCCL_NVLS_ENABLE": "0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1",
    }


def _lonely_collective() -> None:
    """Rank 0 waits in an all-reduce that rank 1 never joins (gloo's own timeout is far longer than the budget)."""
    context = init_tensor_parallel("cpu", timeout_s=120)
    watchdog = Watchdog(context.rank)
    if context.rank == 0:
        with watchdog.phase("lonely all-reduce", 2.0):
            torch.distributed.all_reduce(torch.ones(1))
    else:
        with watchdog.phase("rank 1 idles", 120.0):
            time.sleep(60)


@pytest.mark.slow
def test_hang_becomes_a_named_failure(capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="watchdog"):
        spawn(_lonely_collective, 2, timeout_s=60)
    assert time.monotonic() - started < 45
    assert "HANG: rank 0: phase 'lonely all-reduce' exceeded its 2 s budget" in capfd.readouterr().err


def test_shards_are_slices_of_the_world_1_model() -> None:
    full = build_tp_paged_decoder("tiny", 9, 16, 2, TensorParallel(), seed=3)
    parts = [build_tp_paged_decoder("tiny", 9, 16, 2, TensorParallel(r, 2, "unused"), seed=3) for r in range(2)]
    parameters = dict(full.named_parameters())
    for rank, part in enumerate(parts):
        for name, parameter in part.named_parameters():
            expected = shard(name, parameters[name], SHAPES["tiny"], TensorParallel(rank, 2, "unused"))
            assert torch.equal(parameter, expected), name
    q_size = SHAPES["tiny"].heads * SHAPES["tiny"].head_dim
    qkv = parts[0].layers[0].qkv_proj.weight  # rank 0: first half of Q's heads, then of K's, then of V's
    assert torch.equal(qkv[: q_size // 2], parameters["layers.0.qkv_proj.weight"][: q_size // 2])
    caches = torch.cat([part.kv_cache for part in parts], dim=3)
    full.fill_cache(5)
    for part in parts:
        part.fill_cache(5)
    assert torch.equal(torch.cat([part.kv_cache for part in parts], dim=3), full.kv_cache)
    assert not torch.equal(caches, full.kv_cache)  # fill_cache really wrote


def test_world_1_model_is_the_paged_decoder() -> None:
    model = build_tp_paged_decoder("tiny", 9, 16, 2, TensorParallel(), seed=1)
    plain = PagedQwen3Decoder(SHAPES["tiny"], 9, 16, 2).eval()
    plain.load_state_dict(model.state_dict())
    model.fill_cache(2)
    plain.kv_cache.copy_(model.kv_cache)
    rng = np.random.default_rng(0)
    positions = torch.as_tensor(rng.integers(0, 32, 3))
    tables = torch.tensor([[1, 2], [3, 4], [5, 6]])
    slots = tables[torch.arange(3), positions // 16] * 16 + positions % 16
    inputs = (torch.as_tensor(rng.integers(0, 512, 3)), positions, slots, tables, positions + 1)
    with torch.no_grad():
        assert torch.equal(model(*inputs), plain(*inputs))


def test_bad_parallel_settings_are_named() -> None:
    with pytest.raises(ValueError, match="kv_heads=2 is not divisible by world_size=4"):
        local_shape(SHAPES["tiny"], 4)
    with pytest.raises(ValueError, match="rank=2 is not allowed"):
        TensorParallel(2, 2, "g")
    with pytest.raises(ValueError, match="needs group_name"):
        TensorParallel(0, 2)


def test_eager_runner_matches_graph_runner() -> None:
    """The runner's eager mode (the graph-vs-eager baseline) samples what its captured graphs sample."""
    workload = Workload(requests=10, max_batch=4, num_blocks=40, max_blocks_per_seq=2, new_tokens=(2, 12), seed=4)
    model = build_tp_paged_decoder("tiny", 40, 16, 2, TensorParallel(), seed=4)
    tokens = []
    for eager in (True, False):
        runner = GraphRunner(
            paged_step(model),
            workload.fields(),
            4,
            get_device("cpu"),
            RunnerConfig(mode="forward-async", capture_sizes=(1, 2, 4), eager=eager, poison=True),
        )
        with torch.inference_mode():
            model.fill_cache(0)
            runner.capture()
            tokens.append(DecodeHarness(workload, host_delay_s=0.001).run(runner).tokens)
    assert tokens[0] == tokens[1] and len(tokens[0]) == 10


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (run on the device, nvidia-h200-x2)")
def test_tp2_on_two_gpus_nccl() -> None:
    """The same session on two GPUs: NCCL all-reduces inside CUDA graphs, tiny shape, float32 and bfloat16."""
    options = dataclasses.replace(
        PRESETS["cpu"],
        device="cuda",
        bench=WorkloadSpec(rounds=1, prompt_len=(16, 40), new_tokens=(8, 16), arrivals_per_row=0.0),
        bench_dtype="bfloat16",
    )
    results = spawn(worker, 2, (options, None), timeout_s=300)
    for result in results:
        assert result["ok"], result["failures"]
        assert result["backend"] == "nccl"
        assert all(run["ranks_agree"] for run in result["tokens"])


def test_bad_session_options_are_named() -> None:
    with pytest.raises(ValueError, match="compile_lowering='torchair' is not allowed"):
        dataclasses.replace(PRESETS["cpu"], compile_lowering="torchair")
    with pytest.raises(ValueError, match="batches=\\(0,\\) is not allowed"):
        dataclasses.replace(PRESETS["cpu"], batches=(0,))
