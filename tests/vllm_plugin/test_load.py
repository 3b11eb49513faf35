"""A smaller run of the bounded load test (bench.serve_load): `ascend-graph serve` in graph mode
"forward-async" under 60 requests at concurrency 16 with ~10 % clients that disconnect mid-stream."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytest.importorskip("openai")


@pytest.mark.slow
def test_load_with_disconnects_loses_nothing_and_server_stays_up(tmp_path: Path) -> None:
    from bench.serve_load import main

    out = tmp_path / "load.json"
    argv = ["--requests", "60", "--concurrency", "16", "--disconnect-fraction", "0.1", "--out", str(out)]
    result = main([*argv, "--work-dir", str(tmp_path)])
    totals = result["summary"]["totals"]
    assert totals["ok"] + totals["disconnected"] == 60, result["summary"]["failures"]
    assert totals["disconnected"] == 6 and result["peak_in_flight"] == 16
    greedy = result["greedy_check"]
    assert greedy["checked"] > 0 and greedy["compared_by_tokens"] == greedy["checked"] and greedy["unexplained"] == 0, (
        greedy
    )
    assert result["server_log"]["error_lines"] == 0, result["server_log"]["error_examples"]
    assert result["after"]["metrics"]["drained"] and result["after"]["alive"]["alive"]
    assert result["verdict"]["pass"], result["verdict"]
    assert out.exists()
