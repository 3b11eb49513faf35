"""The decode-step benchmark (bench/decode_step.py) on the CPU: raw figures, graphs really replayed, a PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.decode_step import main


def test_bench_on_cpu_writes_raw_figures_and_graphs_really_replayed(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    main(["--preset", "cpu", "--batches", "2,3", "--iters", "3", "--out", str(out)])
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


def test_bench_shows_progress_and_writes_a_png_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    main(["--preset", "cpu", "--batches", "2", "--iters", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    png = Path(result["plot"])
    assert png == out.with_suffix(".png") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "decode-step bench" in err and "2/2" in err, err[-500:]  # one run per variant, on stderr
