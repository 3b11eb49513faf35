"""Table and plot of the serving benchmark, from its JSON only.

python bench/report_serve.py bench/results/serve_cpu.json --png bench/results/serve_cpu.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def table(result: dict[str, Any]) -> str:
    lines = [
        "| config | concurrency | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms | output tok/s | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for config in result["configs"]:
        for concurrency, run in config["runs"].items():
            cells = [f"{run[f'p50_{m}_ms']:.1f} / {run[f'p99_{m}_ms']:.1f}" for m in ("ttft", "tpot", "itl")]
            lines.append(
                f"| {config['config']} | {concurrency} | "
                + " | ".join(cells)
                + f" | {run['output_throughput']:.0f} | {run['failed']} |"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    names = [config["config"] for config in result["configs"]]
    for axis, concurrency in zip(axes[0], ("1", "8"), strict=True):
        data = [config["runs"][concurrency]["itls_ms"] for config in result["configs"]]
        axis.boxplot(data, showfliers=False)
        axis.set_xticks(range(1, len(names) + 1), names)
        axis.set(ylabel="inter-token latency (ms)", title=f"concurrency {concurrency}")
        axis.grid(True, alpha=0.3)
    env = result["environment"]
    figure.suptitle(f"vllm bench serve on the CPU lane, vLLM {env['vllm']}, torch {env['torch']}")
    figure.tight_layout()
    figure.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--png")
    args = parser.parse_args()
    result = json.loads(Path(args.path).read_text())
    print(table(result))
    if args.png:
        plot(result, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
