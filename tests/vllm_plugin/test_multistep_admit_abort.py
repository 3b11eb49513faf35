"""decode_steps with requests admitted and aborted in the middle of generation (multistep_admit_run.py drives vLLM's
`LLMEngine` step by step in a child process): with K = 4 every surviving request streams, as deltas, the tokens it
streams with K = 1, in the same order; an aborted request receives nothing after its abort and, before it, a
prefix of the same tokens; no request is lost. A broken burst (a token not fed back) gives other tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .multistep_admit_run import ABORTED, FIRST, SCRIPT, STEP_LIMIT

pytest.importorskip("vllm")

MAX_TOKENS = {name: n for name, _, n in FIRST} | {
    action[1]: action[3] for actions in SCRIPT.values() for action in actions if action[0] == "add"
}
RUN_TIMEOUT_S = 600  # a hang fails the test instead of the CI job; the runs take ~15 s each on 2 cores


def _run(model_dir: Path, decode_steps: int, out: Path, **env: str) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, "-m", "tests.vllm_plugin.multistep_admit_run", str(model_dir), str(decode_steps), str(out)],
        check=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(out.read_text())


def _tokens(run: dict[str, Any]) -> dict[str, list[int]]:
    return {name: [token for delta in deltas for token in delta] for name, deltas in run["deltas"].items()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("admit") / "tiny-qwen3")


@pytest.fixture(scope="module")
def runs(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    out = tmp_path_factory.mktemp("admit-runs")
    return {k: _run(model_dir, k, out / f"k{k}.json") for k in (1, 4)}


@pytest.mark.slow
def test_survivors_stream_k1_tokens_and_nothing_is_lost(runs: dict[int, dict[str, Any]]) -> None:
    k1, k4 = _tokens(runs[1]), _tokens(runs[4])
    survivors = sorted(set(MAX_TOKENS) - ABORTED)
    for k, run in runs.items():
        # Every request left the engine (none lost or stuck) and every survivor ran to its max_tokens.
        assert run["unfinished"] == 0 and run["steps"] < STEP_LIMIT, (k, run["steps"])
        assert sorted(run["finish"]) == survivors, (k, run["finish"])
        assert set(run["finish"].values()) == {"length"}, (k, run["finish"])
        assert all(len(_tokens(run)[name]) == MAX_TOKENS[name] for name in survivors), k
        # Requests were added while others were in the middle of their generation (and, with K = 4, of bursts).
        assert all(run["mid_generation_at_add"].values()), (k, run["mid_generation_at_add"])
    # Deltas joined in arrival order: the same tokens as K = 1, for every survivor.
    assert {name: k4[name] for name in survivors} == {name: k1[name] for name in survivors}
    # Bursts really ran: fewer engine steps, several tokens per delta; K = 1 streamed one token per delta.
    counts = runs[4]["counts"]
    assert counts["bursts"] > 0 and counts["burst_steps"] > counts["bursts"], counts
    assert runs[4]["steps"] < runs[1]["steps"], (runs[1]["steps"], runs[4]["steps"])
    assert max(len(delta) for deltas in runs[4]["deltas"].values() for delta in deltas) > 1
    assert max(len(delta) for deltas in runs[1]["deltas"].values() for delta in deltas) == 1
    assert runs[1]["counts"]["bursts"] == 0, runs[1]["counts"]


@pytest.mark.slow
def test_aborted_requests_stop_streaming_at_the_abort(runs: dict[int, dict[str, Any]]) -> None:
    k1, k4 = _tokens(runs[1]), _tokens(runs[4])
    for k, run in runs.items():
        assert run["after_abort"] == dict.fromkeys(ABORTED, 0), (k, run["after_abort"])  # nothing after the abort
        got = _tokens(run)
        # Aborted mid-generation: some tokens came, far fewer than max_tokens ("waiting-c" may get none).
        for name in ABORTED - {"waiting-c"}:
            assert 0 < len(got[name]) < MAX_TOKENS[name], (k, name, len(got.get(name, [])))
    for name in ABORTED:
        # What each run received before its abort is a prefix of the same greedy sequence.
        short, long = sorted((k1.get(name, []), k4.get(name, [])), key=len)
        assert long[: len(short)] == short, name


@pytest.mark.slow
def test_broken_burst_gives_other_tokens(model_dir: Path, runs: dict[int, dict[str, Any]], tmp_path: Path) -> None:
    """The further steps of a burst read the previous input token, not the one just sampled: the same script
    gives other tokens (the test above would fail on it)."""
    broken = _run(model_dir, 4, tmp_path / "broken.json", ASCEND_GRAPH_UNSAFE_BURST_STALE_INPUT="1")
    survivors = sorted(set(MAX_TOKENS) - ABORTED)
    tokens, reference = _tokens(broken), _tokens(runs[1])
    assert [tokens.get(name) for name in survivors] != [reference[name] for name in survivors]
