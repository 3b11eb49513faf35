"""Tables and plot of the tensor-parallel decode benchmark, from its JSON only.

python -m bench.report_tp bench/results/tp_h200_qwen3-8b.json --png bench/results/tp_h200.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

VARIANTS = (  # (tp is 1 or the world size, graph, mode) -> column
    ("1", False, "sync", "TP=1 eager"),
    ("1", True, "sync", "TP=1 graph sync"),
    ("1", True, "forward-async", "TP=1 graph fwd-async"),
    ("w", False, "sync", "TP={w} eager"),
    ("w", True, "sync", "TP={w} graph sync"),
    ("w", True, "forward-async", "TP={w} graph fwd-async"),
)


def step_times(result: dict[str, Any]) -> dict[tuple[str, bool, str, int], dict[str, Any]]:
    """Rank 0's figures of each bench run, by (tp "1"/"w", graph, mode, batch)."""
    rows = {}
    for run in result.get("bench", []):
        figures = run["per_rank"][0]
        tp = "1" if figures["tp"] == 1 else "w"
        rows[(tp, figures["graph"], figures["mode"], figures["batch"])] = {
            **figures,
            "tpot_ms_ranks": [rank["tpot_ms"] for rank in run["per_rank"]],
        }
    return rows


def bench_table(result: dict[str, Any]) -> str:
    world, rows = result["world_size"], step_times(result)
    names = [name.format(w=world) for *_, name in VARIANTS]
    lines = [
        "| batch | "
        + " | ".join(names)
        + f" | TP={world} ÷ TP=1 (graph fwd-async) | graph ÷ eager (TP={world} sync) |",
        "|---" * (len(names) + 3) + "|",
    ]
    for batch in sorted({key[3] for key in rows}):
        cells = [rows.get((tp, graph, mode, batch)) for tp, graph, mode, _ in VARIANTS]
        text = [f"{cell['tpot_ms']:.2f}" if cell else "–" for cell in cells]
        ratio = f"{cells[5]['tpot_ms'] / cells[2]['tpot_ms']:.2f}" if cells[5] and cells[2] else "–"
        graph_gain = f"{cells[4]['tpot_ms'] / cells[3]['tpot_ms']:.2f}" if cells[4] and cells[3] else "–"
        lines.append(f"| {batch} | " + " | ".join(text) + f" | {ratio} | {graph_gain} |")
    return "\n".join(lines)


def check_table(result: dict[str, Any]) -> str:
    lines = ["| run | steps | ranks agree | tokens = reference | first mismatch |", "|---|---|---|---|---|"]
    for part in ("tokens", "reduced"):
        for run in result.get(part, []):
            equal = run.get("tokens_equal_reference")
            lines.append(
                f"| {run['label']} | {run['per_rank'][0]['steps']} | {run['ranks_agree']} | "
                f"{'reference' if equal is None else equal} | {run.get('first_mismatch') or ''} |"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    world, rows = result["world_size"], step_times(result)
    batches = sorted({key[3] for key in rows})
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(VARIANTS)
    for index, (tp, graph, mode, name) in enumerate(VARIANTS):
        values = [rows[(tp, graph, mode, b)]["tpot_ms"] if (tp, graph, mode, b) in rows else 0 for b in batches]
        positions = [b + (index - len(VARIANTS) / 2 + 0.5) * width for b in range(len(batches))]
        axis.bar(positions, values, width, label=name.format(w=world))
    axis.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    axis.set_ylabel("step time (median ms, rank 0)")
    env = result["environment"]
    shape = result["options"]["shape"]
    axis.set_title(f"{shape} decode, TP=1 vs TP={world}: {env['device']}, torch {env['torch']}")
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(png, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json")
    parser.add_argument("--png")
    args = parser.parse_args()
    result = json.loads(Path(args.json).read_text())
    print(f"ok: {result.get('ok')}  failures: {result.get('failures')}")
    print(f"logits: {result.get('logits')}\n")
    print(check_table(result) + "\n")
    if result.get("bench"):
        print(bench_table(result))
        if args.png:
            plot(result, args.png)


if __name__ == "__main__":
    main()
