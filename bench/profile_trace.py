"""What a decode step costs on the GPU, read from torch.profiler's chrome trace (CUDA activity).

A profiled `LLM.generate` also holds the prefill step and the first and last steps of async scheduling. Two runs of
the same prompts that differ only in their number of output tokens hold the same prefill and the same edges, so
their difference over the extra tokens is decode steps only: kernels per decode step = (kernels of the long run -
kernels of the short run) / extra steps, and the same for GPU busy time and for each kernel name. GPU busy is the
union of kernel intervals (kernels of several streams that overlap count once), not the sum of their durations.

Pure functions over plain trace dicts, so that the CPU tests feed them synthetic events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

KERNEL_CATEGORY = "kernel"  # kineto's category of a GPU kernel (CUPTI concurrent kernel record)
COPY_CATEGORIES = ("gpu_memcpy", "gpu_memset")  # counted apart: not kernels, but GPU work per step all the same


@dataclasses.dataclass(frozen=True)
class KernelTotals:
    """One name's launches and summed duration (microseconds) in a profiled window."""

    count: float
    time_us: float


@dataclasses.dataclass(frozen=True)
class TraceFigures:
    """What one profiled window holds: kernel launches, GPU busy (union of kernel intervals), copies, per name."""

    kernels: int
    busy_us: float
    copies: int
    by_name: dict[str, KernelTotals]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kernels": self.kernels,
            "busy_us": round(self.busy_us, 3),
            "copies": self.copies,
            "by_name": {name: [totals.count, round(totals.time_us, 3)] for name, totals in self.by_name.items()},
        }


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by [start, end) intervals; overlapping or nested intervals count once."""
    total = 0.0
    current_start: float | None = None
    current_end = 0.0
    for start, end in sorted(intervals):
        if end < start:
            raise ValueError(f"interval ({start}, {end}) ends before it starts")
        if current_start is None or start > current_end:
            if current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_start is not None:
        total += current_end - current_start
    return total


def _events(trace: Mapping[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event list of a chrome trace (kineto writes {"traceEvents": [...]}; a bare list is also valid)."""
    events = trace.get("traceEvents") if isinstance(trace, Mapping) else trace
    if not isinstance(events, list):
        raise ValueError("not a chrome trace: no 'traceEvents' list")
    return events


def trace_figures(trace: Mapping[str, Any] | list[dict[str, Any]]) -> TraceFigures:
    """Kernel launches, their busy union and per-name totals in one profiled window (complete "X" events)."""
    intervals: list[tuple[float, float]] = []
    by_name: dict[str, list[float]] = {}
    copies = 0
    for event in _events(trace):
        if event.get("ph") != "X":
            continue
        category = event.get("cat")
        if category in COPY_CATEGORIES:
            copies += 1
        if category != KERNEL_CATEGORY:
            continue
        start, duration = float(event["ts"]), float(event.get("dur", 0.0))
        intervals.append((start, start + duration))
        totals = by_name.setdefault(str(event.get("name", "?")), [0, 0.0])
        totals[0] += 1
        totals[1] += duration
    return TraceFigures(
        kernels=len(intervals),
        busy_us=union_length(intervals),
        copies=copies,
        by_name={name: KernelTotals(int(count), time) for name, (count, time) in by_name.items()},
    )


@dataclasses.dataclass(frozen=True)
class StepFigures:
    """Per decode step: kernel launches, GPU busy (ms), copies, and per kernel name (count, time in us)."""

    steps: int
    kernels_per_step: float
    busy_ms_per_step: float
    copies_per_step: float
    by_name: dict[str, KernelTotals]

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "kernels_per_step": round(self.kernels_per_step, 3),
            "busy_ms_per_step": round(self.busy_ms_per_step, 4),
            "copies_per_step": round(self.copies_per_step, 3),
            "by_name": {
                name: [round(totals.count, 3), round(totals.time_us, 3)] for name, totals in self.by_name.items()
            },
        }


def per_step(long: TraceFigures, short: TraceFigures, steps: int) -> StepFigures:
    """The long window minus the short one, over the `steps` decode steps only the long one ran."""
    if steps <= 0:
        raise ValueError(f"steps={steps}: the long run must have more decode steps than the short one")
    names = sorted(set(long.by_name) | set(short.by_name))
    zero = KernelTotals(0, 0.0)
    by_name = {}
    for name in names:
        more, less = long.by_name.get(name, zero), short.by_name.get(name, zero)
        if more.count != less.count or more.time_us != less.time_us:
            by_name[name] = KernelTotals((more.count - less.count) / steps, (more.time_us - less.time_us) / steps)
    return StepFigures(
        steps=steps,
        kernels_per_step=(long.kernels - short.kernels) / steps,
        busy_ms_per_step=(long.busy_us - short.busy_us) / steps / 1e3,
        copies_per_step=(long.copies - short.copies) / steps,
        by_name=by_name,
    )


def top_kernels(by_name: Mapping[str, KernelTotals], limit: int = 12) -> list[tuple[str, KernelTotals]]:
    """The names that take the most GPU time per step, most first (ties: more launches first, then by name)."""
    ranked = sorted(by_name.items(), key=lambda item: (-item[1].time_us, -item[1].count, item[0]))
    return ranked[:limit]


def decode_step_ms(full_s: float, prefill_s: float, tokens: int) -> float:
    """Decode step time: (time for `tokens` output tokens - time for 1) / (tokens - 1), in milliseconds."""
    if tokens < 2:
        raise ValueError(f"tokens={tokens}: a decode step needs at least 2 output tokens")
    return (full_s - prefill_s) / (tokens - 1) * 1e3
