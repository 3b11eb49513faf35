"""Summary of the GPU lane's serving runs (bench/gpu_serve.py JSONs): per model, configuration and concurrency the
median [min-max] over rounds of TPOT p50, TTFT p50, ITL p99 and output tok/s; the issue's ratios (forward-async
over stock vLLM, forward-async over ascend_graph sync) taken from servers of one call only; capture time and graph
pool from the servers' logs; a PNG of TPOT p50. Rows a run marked "void" are left out and listed.

    python bench/gpu_summary.py bench/results/serve_h200_tiny_9b53006.json bench/results/serve_h200_qwen3_9b53006.json \
        --out bench/results/serve_h200_summary_2026-12-02.json --png bench/results/serve_h200_2026-12-02.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

FIGURES = {"tpot_p50_ms": "p50_tpot_ms", "ttft_p50_ms": "p50_ttft_ms", "itl_p99_ms": "p99_itl_ms"}
RATIOS = {
    "forward_async_over_stock": ("ag-forward-async", "stock"),
    "forward_async_over_sync": ("ag-forward-async", "ag-sync"),
    # the ablation: ascend_graph's runner against vLLM's with the same compiler, and each against stock vLLM
    "forward_async_over_vllm_runner_async": ("ag-forward-async", "ag-compiler-vllm-runner-async"),
    "sync_over_stock_no_async": ("ag-sync", "stock-no-async"),
    "passes_over_forward_async": ("ag-forward-async-passes", "ag-forward-async"),
}
TARGETS = {"forward_async_over_stock": {"1": 0.90, "8": 1.00, "32": 1.00}}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _capture(entry: dict[str, Any]) -> dict[str, Any]:
    ours = entry.get("ascend_graph_capture_logged") or []
    return {
        "vllm_logged_seconds": sum(c["seconds"] for c in entry.get("capture_logged") or []),  # vLLM's line, whole s
        "ascend_graph_seconds": round(sum(c["seconds"] for c in ours), 2) if ours else None,
        "ascend_graph_pool_gib": round(sum(c.get("pool_gib", 0.0) for c in ours), 3) if ours else None,
        "startup_s": round(entry["startup_s"], 1) if entry.get("startup_s") else None,
    }


def summarize(paths: list[Path]) -> dict[str, Any]:
    rows, void, sources = [], [], []
    for path in paths:
        run = json.loads(path.read_text())
        sources.append({"file": path.name, **run["environment"]})
        for entry in run["configs"]:
            if entry.get("void"):
                void.append(
                    {"file": path.name, "model": entry["model"], "config": entry["config"], "why": entry["void"]}
                )
                continue
            figures = {}
            for concurrency, rounds in entry["runs"].items():
                cell = {name: _spread([r[key] for r in rounds]) for name, key in FIGURES.items()}
                cell["output_tok_s"] = _spread([r["output_throughput"] for r in rounds])
                cell["failed"] = sum(r["failed"] for r in rounds)
                figures[concurrency] = cell
            rows.append(
                {
                    "file": path.name,
                    "model": entry["model"],
                    "config": entry["config"],
                    "capture": _capture(entry),
                    "figures": figures,
                }
            )
    return {"sources": sources, "rows": rows, "void": void, "ratios": _ratios(rows)}


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TPOT p50 medians of two configurations served in the same call, per model and concurrency."""
    found = []
    index = {(r["file"], r["model"], r["config"]): r for r in rows}
    for file, model in sorted({(f, m) for f, m, _ in index}):
        for name, (top, bottom) in RATIOS.items():
            a, b = index.get((file, model, top)), index.get((file, model, bottom))
            if not a or not b:
                continue
            for concurrency in a["figures"]:
                if concurrency not in b["figures"]:
                    continue
                ratio = (
                    a["figures"][concurrency]["tpot_p50_ms"]["median"]
                    / b["figures"][concurrency]["tpot_p50_ms"]["median"]
                )
                target = TARGETS.get(name, {}).get(concurrency)
                found.append(
                    {
                        "model": model,
                        "ratio": name,
                        "concurrency": int(concurrency),
                        "value": round(ratio, 3),
                        "target": target,
                        "met": None if target is None else ratio <= target,
                        "file": file,
                    }
                )
    return found


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| model | config | TPOT p50 ms c1 / c8 / c32 (median [min-max]) | TTFT p50 ms c1 | capture s (vLLM line) |",
        "|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        cells = []
        for c in ("1", "8", "32"):
            cell = row["figures"].get(c)
            t = cell["tpot_p50_ms"] if cell else None
            cells.append(f"{t['median']:.2f} [{t['min']:.2f}-{t['max']:.2f}]" if t else "-")
        ttft = row["figures"].get("1", {}).get("ttft_p50_ms")
        ttft_cell = f"{ttft['median']:.1f}" if ttft else "-"
        capture = row["capture"]["vllm_logged_seconds"] or "-"
        lines.append(f"| {row['model']} | {row['config']} | {' / '.join(cells)} | {ttft_cell} | {capture} |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in summary["rows"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mine = [r for r in summary["rows"] if r["model"] == model and r["config"] != "eager"]  # eager: the table
        width = 0.8 / max(1, len(mine))
        for k, row in enumerate(mine):
            xs, ys, lo, hi = [], [], [], []
            for i, c in enumerate(("1", "8", "32")):
                if c in row["figures"]:
                    t = row["figures"][c]["tpot_p50_ms"]
                    xs.append(i + k * width)
                    ys.append(t["median"])
                    lo.append(t["median"] - t["min"])
                    hi.append(t["max"] - t["median"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=row["config"])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(3)], ["c=1", "c=8", "c=32"])
        ax.set_title(f"{model}: TPOT p50 (ms), median and range of rounds")
        ax.legend(fontsize=7)
    commits = ", ".join(sorted({source.get("git_commit", "?") for source in summary["sources"]}))
    eager = "; eager in the JSON" if any(r["config"] == "eager" for r in summary["rows"]) else ""
    title = "vllm bench serve, one H200, vLLM 0.26.0: stock vLLM vs ascend_graph"
    fig.suptitle(f"{title} (random 128/128{eager}; {commits})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    summary = summarize(args.runs)
    args.out.write_text(json.dumps(summary, indent=1))
    if args.png:
        plot(summary, args.png)
    print(markdown(summary))
    for ratio in summary["ratios"]:
        print(ratio)
    for row in summary["void"]:
        print("void:", row["model"], row["config"])


if __name__ == "__main__":
    main()
