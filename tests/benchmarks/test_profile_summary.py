"""The decode-step profiler's tables (bench/profile_summary.py) from a synthetic record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.profile_summary import kernel_tables, main, rows, spread, summarize


def process(config: str, repeat: int, steps: dict[str, list[float]], kernels: float, **extra: Any) -> dict[str, Any]:
    batches = {
        batch: {
            "step_ms": step_ms,
            "profile": {
                "steps": 33,
                "kernels_per_step": kernels,
                "busy_ms_per_step": 1.5,
                "copies_per_step": 1.0,
                "by_name": {"gemm": [kernels - 1, 900.0 + repeat], f"norm_{config}": [1.0, 20.0]},
            },
        }
        for batch, step_ms in steps.items()
    }
    return {"model": "qwen3-8b", "config": config, "repeat": repeat, "batches": batches, **extra}


def record() -> dict[str, Any]:
    stock_capture = {"capture_logged": [{"seconds": 4.0, "gib": 0.5}]}
    ours = {"ascend_graph_report": {"full_graphs": 11, "capture_seconds": 2.5, "pool_bytes": 1 << 29}}
    # the timed capture_model calls win over the log line; a profile-only call is no start-up capture
    timed = {
        "captures": [
            {"seconds": 4.6, "bytes": 3 << 28, "profile_only": False},
            {"seconds": 9.0, "bytes": 0, "profile_only": True},
        ]
    }
    return {
        "processes": [
            process("stock", 0, {"1": [7.0, 7.2, 7.1], "32": [10.0]}, 400, **stock_capture),
            process("ag-forward-async", 0, {"1": [6.4, 6.3, 6.5], "32": [9.0]}, 300, **ours),
            process("stock", 1, {"1": [7.6, 7.5, 7.4], "32": [11.0]}, 400, **stock_capture, **timed),
            process("ag-forward-async", 1, {"1": [6.2, 6.1, 6.0], "32": [9.5]}, 300, **ours),
            {"model": "qwen3-8b", "config": "ag-forward-async", "repeat": 2, "error": "exit status 1; log x"},
        ]
    }


def test_spread_ignores_missing_figures() -> None:
    assert spread([None, 2.0, 4.0, 3.0]) == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}
    assert spread([None]) is None


def test_rows_take_each_process_median_then_the_spread_over_processes_and_the_ratio_to_stock() -> None:
    table = {(row["config"], row["batch"]): row for row in rows(record())}
    stock, ours = table[("stock", 1)], table[("ag-forward-async", 1)]
    assert stock["step_ms"] == {"median": pytest.approx(7.3), "min": 7.1, "max": 7.5, "n": 2}
    assert ours["step_ms"]["median"] == pytest.approx(6.25) and ours["processes"] == 2  # the failed one left out
    assert ours["ratio_to_stock"] == pytest.approx(6.25 / 7.3) and stock["ratio_to_stock"] == pytest.approx(1.0)
    assert ours["kernels_per_step"]["median"] == 300 and stock["kernels_per_step"]["median"] == 400
    assert stock["capture_s"] == {"median": pytest.approx(4.3), "min": 4.0, "max": 4.6, "n": 2}
    assert stock["graph_gib"] == {"median": pytest.approx(0.625), "min": 0.5, "max": 0.75, "n": 2}
    assert stock["capture_source"] == ["timed", "vllm_log"]
    assert ours["capture_s"]["median"] == 2.5 and ours["graph_gib"]["median"] == 0.5  # ascend_graph's own report
    assert table[("ag-forward-async", 32)]["ratio_to_stock"] == pytest.approx(9.25 / 10.5)


def test_no_ratio_without_a_baseline_row() -> None:
    only_ours = {"processes": [p for p in record()["processes"] if p["config"] != "stock"]}
    assert all(row["ratio_to_stock"] is None for row in rows(only_ours))


def test_kernel_tables_take_medians_over_processes_and_say_which_kernels_differ() -> None:
    tables = kernel_tables(record(), limit=5)
    ours = dict(tables[("qwen3-8b", "ag-forward-async", 1)])
    assert ours["gemm"].count == 299 and ours["gemm"].time_us == pytest.approx(900.5)
    assert "norm_ag-forward-async" in ours and "norm_stock" not in ours


def test_summary_prints_both_tables_and_the_failed_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    warned = record()
    warned["processes"][0]["warnings"] = ["B=1: no kernels per decode step seen by the profiler"]
    text = summarize({**warned, "environment": {"git_commit": "abc123", "vllm": "0.26.0"}})
    assert "warnings:\n  qwen3-8b stock r0: B=1: no kernels" in text
    assert text.startswith("device ?; git_commit abc123; vllm 0.26.0")
    assert "7.300 [7.100-7.500]" in text and "0.856" in text  # stock B=1 spread; 6.25 / 7.3
    assert "top kernels per decode step" in text and "failed processes:" in text and "exit status 1" in text
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(record()))
    main([str(path), "--top", "1"])
    assert "ag-forward-async" in capsys.readouterr().out


def test_png_draws_one_panel_per_model_and_batch(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path, png = tmp_path / "profile.json", tmp_path / "profile.png"
    path.write_text(json.dumps({**record(), "environment": {"nvidia_smi": "NVIDIA H100, 580", "vllm": "0.26.0"}}))
    main([str(path), "--png", str(png)])
    from matplotlib import image

    height, width, _ = image.imread(png).shape
    assert png.stat().st_size > 10_000 and width > height  # two panels (B=1, B=32) side by side
