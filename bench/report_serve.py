"""Table and plot of the serving benchmark, from its JSON only. Results with interleaved rounds (a "summary")
are drawn as the median of the rounds with min–max bars; older single-run results point by point.

python -m bench.report_serve bench/results/serve_main_<commit>.json --png bench/results/serve_main.png
python -m bench.report_serve bench/results/serve_cpu.json --png bench/results/serve_cpu.png
python -m bench.report_serve bench/results/serve_cpu_run{5,6,7,8}.json --first-run 5 \
    --png bench/results/serve_cpu_run5678.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.serve_bench import summary_table, table


def plot(results: list[dict[str, Any]], png: str, first: int = 1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for axis, concurrency in zip(axes[0], ("1", "8"), strict=True):
        for number, result in enumerate(results, first):
            if "summary" in result:
                _plot_summary(axis, result["summary"], concurrency, f"run {number}: median of {result['rounds']}")
                continue
            names = [config["config"] for config in result["configs"]]
            tpot = [config["runs"][concurrency]["p50_tpot_ms"] for config in result["configs"]]
            axis.plot(names, tpot, "o", label=f"run {number}: TPOT p50")
        axis.set(ylabel="TPOT p50 (ms)", title=f"concurrency {concurrency}", ylim=(0, None))
        axis.grid(True, alpha=0.3)
        axis.tick_params(axis="x", rotation=25, labelsize=7)
        axis.legend(fontsize=8)
    env = results[0]["environment"]
    figure.suptitle(f"vllm bench serve on the CPU lane (2 cores), vLLM {env['vllm']}, torch {env['torch']}")
    figure.tight_layout()
    figure.savefig(png, dpi=110)


def _plot_summary(axis: Any, summary: dict[str, Any], concurrency: str, label: str) -> None:
    names = list(summary)
    cells = [summary[name][concurrency]["p50_tpot_ms"] for name in names]
    medians = [cell["median"] for cell in cells]
    below = [cell["median"] - cell["min"] for cell in cells]
    above = [cell["max"] - cell["median"] for cell in cells]
    axis.errorbar(names, medians, yerr=[below, above], fmt="o", capsize=4, label=f"{label}: TPOT p50 (min–max)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--png")
    parser.add_argument("--first-run", type=int, default=1, help="the number of the first run (table and legend)")
    args = parser.parse_args()
    results = [json.loads(Path(path).read_text()) for path in args.paths]
    print(table(results, args.first_run))
    for result in results:
        if "summary" in result:
            print(f"\nmedian of {result['rounds']} rounds (min–max):\n{summary_table(result['summary'])}")
    if args.png:
        plot(results, args.png, args.first_run)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
