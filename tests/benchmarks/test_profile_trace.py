"""The decode-step profiler's trace arithmetic (bench/profile_trace.py) on synthetic kineto events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.profile_trace import (
    KernelTotals,
    decode_step_ms,
    per_step,
    top_kernels,
    trace_figures,
    union_length,
)


def kernel(name: str, ts: float, dur: float, stream: int = 7) -> dict[str, Any]:
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": stream}


def decode_window(steps: int, prefill: bool = True) -> dict[str, Any]:
    """A trace like a profiled generate: one prefill of 5 kernels, then `steps` decode steps of 3 kernels (gemm 10
    us and norm 2 us on one stream, an output copy kernel of 4 us on another that overlaps the gemm by 1 us), with
    runtime, flow and memcpy events around them."""
    events: list[dict[str, Any]] = [{"ph": "i", "cat": "Trace", "name": "start", "ts": 0}]
    clock = 100.0
    if prefill:
        events += [kernel("prefill_gemm", clock + 20 * i, 15) for i in range(5)]
        clock += 200
    for _ in range(steps):
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": clock - 5, "dur": 3})
        events.append({"ph": "s", "cat": "ac2g", "name": "ac2g", "ts": clock - 5, "id": 1})
        events.append(kernel("gemm", clock, 10))
        events.append(kernel("copy_out", clock + 9, 4, stream=9))  # [clock+9, clock+13): overlaps gemm by 1 us
        events.append(kernel("norm", clock + 20, 2))
        events.append({"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH", "ts": clock + 30, "dur": 1})
        clock += 50
    return {"traceEvents": events, "deviceProperties": []}


def test_union_counts_overlapping_and_nested_intervals_once() -> None:
    assert union_length([]) == 0.0
    assert union_length([(0, 10), (5, 12), (20, 25), (21, 22)]) == pytest.approx(17.0)
    assert union_length([(20, 25), (0, 10), (10, 11)]) == pytest.approx(16.0)  # touching intervals: no gap, no double
    with pytest.raises(ValueError, match="ends before it starts"):
        union_length([(5, 4)])


def test_trace_figures_count_kernels_only_and_take_the_busy_union() -> None:
    figures = trace_figures(decode_window(3, prefill=False))
    assert figures.kernels == 9 and figures.copies == 3
    assert figures.busy_us == pytest.approx(3 * (13 + 2))  # gemm + copy_out overlap: 13 us, then norm 2 us
    assert figures.by_name["gemm"] == KernelTotals(3, 30.0)
    assert "cudaGraphLaunch" not in figures.by_name and "Memcpy DtoH" not in figures.by_name


def test_per_step_difference_removes_prefill_and_edges_exactly() -> None:
    short, long = trace_figures(decode_window(1)), trace_figures(decode_window(34))
    step = per_step(long, short, 33)
    assert step.kernels_per_step == 3.0 and step.copies_per_step == 1.0
    assert step.busy_ms_per_step == pytest.approx(15e-3)
    assert "prefill_gemm" not in step.by_name  # the same in both windows: not a decode kernel
    assert step.by_name["copy_out"] == KernelTotals(1.0, 4.0)
    assert step.as_dict()["by_name"]["gemm"] == [1.0, 10.0]


def test_per_step_needs_more_steps_in_the_long_window() -> None:
    figures = trace_figures(decode_window(1))
    with pytest.raises(ValueError, match="steps=0"):
        per_step(figures, figures, 0)


def test_top_kernels_orders_by_time_then_count() -> None:
    totals = {"a": KernelTotals(1, 5.0), "b": KernelTotals(2, 9.0), "c": KernelTotals(4, 5.0), "d": KernelTotals(1, 1)}
    assert [name for name, _ in top_kernels(totals, limit=3)] == ["b", "c", "a"]


def test_decode_step_ms_is_the_difference_over_the_extra_tokens() -> None:
    assert decode_step_ms(1.27, 0.0, 128) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="tokens=1"):
        decode_step_ms(1.0, 0.5, 1)


def test_a_real_torch_profiler_trace_parses(tmp_path: Path) -> None:
    """torch.profiler's own chrome trace (CPU activity here: no kernels) has the fields the parser reads."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.ones(8).add(1)
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())
    assert any(event.get("ph") == "X" and "ts" in event and "dur" in event for event in trace["traceEvents"])
    assert trace_figures(trace).kernels == 0
    with pytest.raises(ValueError, match="traceEvents"):
        trace_figures({"events": []})
