import json
from pathlib import Path

import pytest

from ascend_graph.cli import main


def test_info_reports_lane_and_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["torch"] and "cpu" in facts["devices"]
    assert facts["lane"] in ("cpu", "cuda", "npu (unverified)")


def test_bench_on_cpu_writes_raw_figures_and_graphs_really_replayed(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    main(["bench", "--preset", "cpu", "--batches", "2,3", "--iters", "3", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["environment"]["torch"]
    rows = result["shapes"][0]["rows"]
    assert {row["variant"] for row in rows} == {"eager", "ascend_graph_aten"}
    assert all("error" not in row and len(row["step_times_ms"]) == 3 for row in rows)
    graph_rows = [row for row in rows if row["variant"] == "ascend_graph_aten"]
    # the first call, 3 warm-up steps and 3 timed steps replay; none may fall back to eager
    assert all(
        row["counters_delta"]["replays"] >= 7 and row["counters_delta"]["eager_calls"] == 0 for row in graph_rows
    )
    assert all(row["max_abs_diff_vs_eager"] < 1e-4 for row in graph_rows)
