"""Seed-style table and plot of the runner benchmark, from its JSON results only.

python -m bench.report_runner bench/results/runner_h100_*.json --png bench/results/runner_h100.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import plot_log_log, report_parser

MODES = ("forward-async", "scheduler-async", "sync")


def rows_by_shape(paths: list[str]) -> tuple[dict[str, dict[tuple[str, int], dict[str, Any]]], dict[str, Any]]:
    shapes: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    environment: dict[str, Any] = {}
    for path in paths:
        result = json.loads(Path(path).read_text())
        environment = result["environment"]
        for shape in result["shapes"]:
            entry = shapes.setdefault(shape["name"], {})
            for row in shape["rows"]:
                if "tpot_ms" in row:
                    entry[(row["mode"], row["batch"])] = row
    return shapes, environment


def table(shapes: dict[str, dict[tuple[str, int], dict[str, Any]]]) -> str:
    lines = [
        "| shape | batch | TPOT forward-async | TPOT scheduler-async | TPOT sync | forward-async vs sync | host ms | "
        "device ms | host ÷ sync step | overlap efficiency (fwd) | device gap ms fwd / sync |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in shapes.items():
        for batch in sorted({b for _, b in rows}):
            cells = {mode: rows.get((mode, batch)) for mode in MODES}
            fwd, sync = cells["forward-async"], cells["sync"]
            tpot = " | ".join(f"{cells[m]['tpot_ms']:.2f}" if cells[m] else "–" for m in MODES)
            if not (fwd and sync):
                continue
            gain = (fwd["tpot_ms"] / sync["tpot_ms"] - 1) * 100
            lines.append(
                f"| {name} | {batch} | {tpot} | {gain:+.1f} % | {sync['host_ms']:.2f} | {sync['device_ms']:.2f} | "
                f"{sync['host_ms'] / sync['tpot_ms'] * 100:.0f} % | {fwd['overlap_efficiency']:.3f} | "
                f"{fwd['device_gap_ms']:.3f} / {sync['device_gap_ms']:.3f} |"
            )
    return "\n".join(lines)


def plot(shapes: dict[str, dict[tuple[str, int], dict[str, Any]]], environment: dict[str, Any], png: str) -> None:
    panels = {}
    for name, rows in shapes.items():
        lines = [(mode, "-o", [(b, r["tpot_ms"]) for (m, b), r in rows.items() if m == mode]) for mode in MODES]
        device = [(b, r["device_ms"]) for (m, b), r in rows.items() if m == "sync"]
        panels[name] = [*lines, ("device time per step", "k:", device)]
    title = f"graph-replay runner, {environment.get('device')}, torch {environment.get('torch')}"
    plot_log_log(png, title, "TPOT (ms)", panels)


def main() -> None:
    parser = report_parser(__doc__)
    args = parser.parse_args()
    shapes, environment = rows_by_shape(args.paths)
    print(table(shapes))
    if args.png:
        plot(shapes, environment, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
