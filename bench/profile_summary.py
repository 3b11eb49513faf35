"""Tables of a decode-step profiler record (bench/gpu_profile.py): per model shape, configuration and batch the
decode step median [min-max] over processes, GPU busy and kernels per step, capture time, graph memory and the ratio
to stock vLLM of the same run; then per configuration the kernels that take the step's GPU time (the table that
says why). Only processes of one record are compared: host speed differs between calls.

    python bench/profile_summary.py bench/results/profile_h100_<commit>.json [--top 12] [--baseline stock]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0]; its siblings import as bench.*
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.profile_trace import KernelTotals, top_kernels  # noqa: E402


def spread(values: list[float]) -> dict[str, float] | None:
    """Median, min, max and count of the finite figures; None where there are none."""
    values = [value for value in values if value is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def capture_figures(process: dict[str, Any]) -> tuple[float | None, float | None, str | None]:
    """Capture seconds, graph GiB and where they come from, for one process: the timed capture_model calls
    (the same instrument for every configuration), else ascend_graph's own report, else vLLM's log line."""
    timed = [c for c in process.get("captures") or [] if "seconds" in c and not c.get("profile_only")]
    if timed:
        sizes = [c["bytes"] for c in timed]
        gib = sum(sizes) / (1 << 30) if None not in sizes else None
        return sum(c["seconds"] for c in timed), gib, "timed"
    ours = process.get("ascend_graph_report") or {}
    if ours.get("full_graphs"):
        return ours["capture_seconds"], ours["pool_bytes"] / (1 << 30), "ascend_graph_report"
    logged = process.get("capture_logged") or []
    if not logged:
        return None, None, None
    return sum(entry["seconds"] for entry in logged), sum(entry["gib"] for entry in logged), "vllm_log"


def rows(record: dict[str, Any], baseline: str = "stock") -> list[dict[str, Any]]:
    """One row per (model, config, batch) with figures over the processes that finished."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for process in record.get("processes", []):
        if process.get("error"):
            continue
        for batch, figures in process.get("batches", {}).items():
            groups.setdefault((process["model"], process["config"], batch), []).append({**figures, "_p": process})
    result = []
    for (model, config, batch), entries in groups.items():
        captures = [capture_figures(entry["_p"]) for entry in entries]
        profiles = [entry.get("profile") or {} for entry in entries]
        kernel_counts = [p.get("kernels_per_step") for p in profiles]
        result.append(
            {
                "model": model,
                "config": config,
                "batch": int(batch),
                "step_ms": spread([statistics.median(entry["step_ms"]) for entry in entries if entry.get("step_ms")]),
                "busy_ms": spread([p.get("busy_ms_per_step") for p in profiles]),
                "kernels_per_step": spread(kernel_counts),
                "copies_per_step": spread([p.get("copies_per_step") for p in profiles]),
                "capture_s": spread([seconds for seconds, _, _ in captures]),
                "graph_gib": spread([gib for _, gib, _ in captures]),
                "capture_source": sorted({source for _, _, source in captures if source}),
                "processes": len(entries),
            }
        )
    _add_ratios(result, baseline)
    return sorted(result, key=lambda row: (row["model"], row["batch"], row["config"] != baseline, row["config"]))


def _add_ratios(table: list[dict[str, Any]], baseline: str) -> None:
    """step median / the baseline's step median of the same model and batch (None where either is missing)."""
    base = {(row["model"], row["batch"]): row["step_ms"] for row in table if row["config"] == baseline}
    for row in table:
        reference = base.get((row["model"], row["batch"]))
        ok = reference and row["step_ms"] and reference["median"] > 0
        row[f"ratio_to_{baseline}"] = row["step_ms"]["median"] / reference["median"] if ok else None


def _cell(figure: dict[str, float] | None, digits: int = 3) -> str:
    if figure is None:
        return "-"
    if figure["n"] == 1 or figure["min"] == figure["max"]:
        return f"{figure['median']:.{digits}f}"
    return f"{figure['median']:.{digits}f} [{figure['min']:.{digits}f}-{figure['max']:.{digits}f}]"


def format_table(table: list[dict[str, Any]], baseline: str = "stock") -> str:
    """The rows as aligned text columns; the last column is the step median over the baseline's."""
    header = ["model", "config", "B", "n", "step ms med [min-max]", "GPU busy ms", "kernels/step", "capture s"]
    header += ["graph GiB", f"/{baseline}"]
    lines = [header]
    for row in table:
        ratio = row[f"ratio_to_{baseline}"]
        lines.append(
            [
                row["model"],
                row["config"],
                str(row["batch"]),
                str(row["processes"]),
                _cell(row["step_ms"]),
                _cell(row["busy_ms"]),
                _cell(row["kernels_per_step"], 1),
                _cell(row["capture_s"], 2),
                _cell(row["graph_gib"], 3),
                f"{ratio:.3f}" if ratio is not None else "-",
            ]
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


KernelTables = dict[tuple[str, str, int], list[tuple[str, KernelTotals]]]


def kernel_tables(record: dict[str, Any], limit: int = 12) -> KernelTables:
    """Per (model, config, batch): the top kernels per step, each name's count and time per step taken as the
    median over the processes (a name missing from a process counts 0 there)."""
    per_group: dict[tuple[str, str, int], list[dict[str, list[float]]]] = {}
    for process in record.get("processes", []):
        if process.get("error"):
            continue
        for batch, figures in process.get("batches", {}).items():
            names = (figures.get("profile") or {}).get("by_name")
            if names is not None:
                per_group.setdefault((process["model"], process["config"], int(batch)), []).append(names)
    tables = {}
    for key, processes in per_group.items():
        every = sorted({name for names in processes for name in names})
        merged = {
            name: KernelTotals(
                statistics.median([names.get(name, [0, 0.0])[0] for names in processes]),
                statistics.median([names.get(name, [0, 0.0])[1] for names in processes]),
            )
            for name in every
        }
        tables[key] = top_kernels(merged, limit)
    return dict(sorted(tables.items()))


def format_kernel_tables(tables: KernelTables, width: int = 90) -> str:
    lines = []
    for (model, config, batch), top in tables.items():
        lines.append(f"-- {model} {config} B={batch}: top kernels per decode step (count, us)")
        for name, totals in top:
            short = name if len(name) <= width else name[: width - 3] + "..."
            lines.append(f"   {totals.count:7.2f}  {totals.time_us:9.2f}  {short}")
    return "\n".join(lines)


def summarize(record: dict[str, Any], baseline: str = "stock", limit: int = 12) -> str:
    """Both tables, and the processes that failed (their config and first line of error)."""
    parts = [format_table(rows(record, baseline), baseline), format_kernel_tables(kernel_tables(record, limit))]
    environment = record.get("environment") or {}
    devices = sorted({p["device"] for p in record.get("processes", []) if p.get("device")})
    if environment or devices:
        keys = ("git_commit", "date", "torch", "vllm", "triton", "nvidia_smi")
        facts = [f"{key} {environment[key]}" for key in keys if environment.get(key)]
        parts.insert(0, f"device {', '.join(devices) or '?'}; " + "; ".join(facts))
    failed = [p for p in record.get("processes", []) if p.get("error")]
    if failed:
        lines = [f"  {p['model']} {p['config']} r{p['repeat']}: {p['error'].strip().splitlines()[0]}" for p in failed]
        parts.append("\n".join(["failed processes:", *lines]))
    warned = [
        f"  {p['model']} {p['config']} r{p['repeat']}: {w}"
        for p in record.get("processes", [])
        for w in p.get("warnings", [])
    ]
    if warned:
        parts.append("\n".join(["warnings:", *warned]))
    return "\n\n".join(parts)


def plot(table: list[dict[str, Any]], png: Any, title: str) -> None:
    """Per (model, batch) one group of bars per configuration: step and GPU busy per decode step (ms, medians with
    min-max whiskers) on the left axis, kernels per step as a marker on the right axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(row["model"], row["batch"]) for row in table})
    configs = list(dict.fromkeys(row["config"] for row in table))
    width = max(5.0, 1.4 + 1.3 * len(configs) * len(groups))
    figure, axes = plt.subplots(1, len(groups), figsize=(width, 4.6), squeeze=False)
    for axis, (model, batch) in zip(axes[0], groups, strict=True):
        kernels_axis = axis.twinx()
        for i, config in enumerate(configs):
            row = next((r for r in table if (r["model"], r["batch"], r["config"]) == (model, batch, config)), None)
            if row is None:
                continue
            for offset, key, colour in ((-0.2, "step_ms", "tab:blue"), (0.2, "busy_ms", "tab:orange")):
                figure_ = row[key]
                if figure_:
                    low, high = figure_["median"] - figure_["min"], figure_["max"] - figure_["median"]
                    axis.bar(i + offset, figure_["median"], 0.4, color=colour, yerr=[[low], [high]], capsize=3)
            if row["kernels_per_step"]:
                kernels_axis.plot(i, row["kernels_per_step"]["median"], "k_", markersize=18, markeredgewidth=2)
        axis.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize=8)
        axis.set(title=f"{model}, batch {batch}", ylabel="ms per decode step")
        kernels_axis.set_ylabel("kernels per step (black)")
        kernels_axis.set_ylim(bottom=0)
        axis.legend(
            handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:orange")],
            labels=["step", "GPU busy"],
            fontsize=8,
            loc="lower left",
        )
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--baseline", default="stock")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--png", help="draw the rows (step, GPU busy, kernels per step) into this PNG")
    args = parser.parse_args(argv)
    record = json.loads(Path(args.path).read_text())
    print(summarize(record, args.baseline, args.top))
    if args.png:
        environment = record.get("environment", {})
        device = environment.get("nvidia_smi", "?").split(",")[0]
        plot(
            rows(record, args.baseline),
            args.png,
            f"{device}, vLLM {environment.get('vllm')}, {environment.get('git_commit')}",
        )


if __name__ == "__main__":
    main()
