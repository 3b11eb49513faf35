"""The main job (`./dev main` → serve_bench): interleaved rounds, medians with their spread, rankings only where
the spreads do not overlap, a JSON with the environment, and a clean end (no "nanobind: leaked" spam at exit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.serve_bench import (
    MAIN_CONFIGS,
    rotated,
    summarize,
    summary_table,
    table,
    verdicts,
)


def _entry(config: str, round_index: int, tpot: float) -> dict[str, Any]:
    run = {
        "p50_tpot_ms": tpot,
        "p99_tpot_ms": tpot * 2,
        "p50_ttft_ms": 10.0,
        "p99_ttft_ms": 20.0,
        "p50_itl_ms": tpot,
        "p99_itl_ms": tpot * 3,
        "output_throughput": 1000 / tpot,
        "failed": 0,
    }
    return {"config": config, "round": round_index, "runs": {"1": run, "8": dict(run, failed=1)}}


def test_main_job_runs_the_vllm_cpu_default_beside_ours() -> None:
    assert MAIN_CONFIGS == ("eager", "vllm-cpu-default", "ascend_graph-sync", "ascend_graph-forward-async")


def test_rounds_rotate_so_every_config_takes_every_position() -> None:
    orders = [rotated(MAIN_CONFIGS, r) for r in range(len(MAIN_CONFIGS))]
    assert orders[0] == list(MAIN_CONFIGS)
    for position in range(len(MAIN_CONFIGS)):
        assert sorted(order[position] for order in orders) == sorted(MAIN_CONFIGS)


def test_summary_gives_median_and_spread_and_ranks_only_without_overlap() -> None:
    entries = [
        *(_entry("ascend_graph-forward-async", r, t) for r, t in enumerate((2.0, 2.2, 2.1))),
        *(_entry("eager", r, t) for r, t in enumerate((3.0, 3.5, 2.9))),  # no overlap: a ranking
        *(_entry("vllm-cpu-default", r, t) for r, t in enumerate((1.9, 2.5, 2.4))),  # overlap: no ranking
    ]
    summary = summarize(entries)
    cell = summary["eager"]["1"]["p50_tpot_ms"]
    assert (cell["median"], cell["min"], cell["max"], cell["values"]) == (3.0, 2.9, 3.5, [3.0, 3.5, 2.9])
    assert summary["eager"]["8"]["failed"] == 3 and summary["eager"]["1"]["failed"] == 0
    lines = verdicts(summary, "ascend_graph-forward-async")
    assert any(line.startswith("ascend_graph-forward-async faster than eager at concurrency 1") for line in lines)
    assert any("within noise of vllm-cpu-default at concurrency 1" in line for line in lines), lines
    assert not any("slower" in line for line in lines)
    rendered = summary_table(summary)
    assert "| eager | 1 | 3 | 3.0 (2.9–3.5) |" in rendered, rendered
    assert "eager (round 2)" in table([{"configs": entries}])


def test_main_job_end_to_end_writes_its_json_and_exits_cleanly(tmp_path: Path) -> None:
    """One short round of one server, in a fresh interpreter as `./dev main` runs it."""
    pytest.importorskip("vllm")
    out = tmp_path / "serve.json"
    command = [sys.executable, "-m", "bench.serve_bench", "--configs", "eager"]
    command += ["--rounds", "1", "--prompts", "2", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nanobind" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    assert "| eager | 1 | 1 |" in done.stdout, done.stdout
    result = json.loads(out.read_text())
    environment = result["environment"]
    assert environment["device"].startswith("CPU: ") and environment["vllm"] and environment["torch"]
    assert environment["date"] and "git_commit" in environment
    assert result["summary"]["eager"]["1"]["failed"] == 0 and result["order"] == [["eager"]]
