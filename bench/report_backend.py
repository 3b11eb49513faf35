"""Plot and tabulate the backend benchmark from its JSON results (never from anything else).

python -m bench.report_backend bench/results/backend_h100_*.json --png bench/results/backend_h100.png
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import plot_log_log, report_parser

PEERS = ("manual_graph", "cudagraphs", "reduce_overhead")
OURS = ("ascend_graph_aten", "ascend_graph_inductor", "ascend_graph_aten+passes", "ascend_graph_inductor+passes")
PASSES_COLUMNS = (
    "reduce_overhead",
    "ascend_graph_inductor",
    "ascend_graph_inductor+passes",
    "ascend_graph_aten",
    "ascend_graph_aten+passes",
)


def load(paths: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Rows merged per shape: {shape: {"rows": {(variant, batch): row}, "floor_ms": {batch: ms}}}."""
    shapes: dict[str, dict[str, Any]] = defaultdict(lambda: {"rows": {}, "floor_ms": {}})
    environment: dict[str, Any] = {}
    for path in paths:
        result = json.loads(Path(path).read_text())
        environment = result["environment"]
        for shape in result["shapes"]:
            entry = shapes[shape["name"]]
            entry["floor_ms"].update({int(b): ms for b, ms in shape.get("floor_ms", {}).items()})
            for row in shape["rows"]:
                if "median_ms" in row:
                    entry["rows"][(row["variant"], row["batch"])] = row
    return dict(shapes), environment


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    kernels = row.get("kernels_per_step")
    return f"{row['median_ms']:.2f} ({kernels:.0f})" if kernels is not None else f"{row['median_ms']:.2f}"


def passes_table(shapes: dict[str, dict[str, Any]]) -> str:
    """Step ms (kernels per step) with and without the fusion passes, beside reduce-overhead, and the ratios."""
    header = (
        "| shape | batch | "
        + " | ".join(PASSES_COLUMNS)
        + " | inductor+passes ÷ reduce_overhead | inductor+passes ÷ inductor | aten+passes ÷ aten |"
    )
    lines = [header, "|" + "---|" * (len(PASSES_COLUMNS) + 5)]
    for name, entry in shapes.items():
        for batch in sorted({b for _, b in entry["rows"]}):
            rows = {v: entry["rows"].get((v, batch)) for v in PASSES_COLUMNS}

            def ratio(a: str, b: str, rows: dict[str, Any] = rows) -> str:
                if rows[a] is None or rows[b] is None:
                    return "–"
                return f"{rows[a]['median_ms'] / rows[b]['median_ms']:.3f}"

            cells = " | ".join(_cell(rows[v]) for v in PASSES_COLUMNS)
            lines.append(
                f"| {name} | {batch} | {cells} | {ratio('ascend_graph_inductor+passes', 'reduce_overhead')} | "
                f"{ratio('ascend_graph_inductor+passes', 'ascend_graph_inductor')} | "
                f"{ratio('ascend_graph_aten+passes', 'ascend_graph_aten')} |"
            )
    return "\n".join(lines)


def table(shapes: dict[str, dict[str, Any]]) -> str:
    variants = [v for v in ("eager", *PEERS, *OURS) if any(v == key[0] for e in shapes.values() for key in e["rows"])]
    header = "| shape | batch | " + " | ".join(variants) + " | floor | ours ÷ best peer | ours ÷ floor |"
    lines = [header, "|" + "---|" * (len(variants) + 5)]
    for name, entry in shapes.items():
        for batch in sorted({b for _, b in entry["rows"]}):
            cells = []
            for variant in variants:
                row = entry["rows"].get((variant, batch))
                cells.append(_cell(row))
            peers = [entry["rows"][(v, batch)]["median_ms"] for v in PEERS if (v, batch) in entry["rows"]]
            ours = [entry["rows"][(v, batch)]["median_ms"] for v in OURS if (v, batch) in entry["rows"]]
            floor = entry["floor_ms"].get(batch)
            ratio_peer = f"{min(ours) / min(peers):.2f}" if ours and peers else "–"
            ratio_floor = f"{min(ours) / floor:.2f}" if ours and floor else "–"
            floor_cell = f"{floor:.2f}" if floor else "–"
            lines.append(
                f"| {name} | {batch} | " + " | ".join(cells) + f" | {floor_cell} | {ratio_peer} | {ratio_floor} |"
            )
    return "\n".join(lines)


def plot(shapes: dict[str, dict[str, Any]], environment: dict[str, Any], png: str) -> None:
    panels = {}
    for name, entry in shapes.items():
        variants = sorted({v for v, _ in entry["rows"]}, key=("eager", *PEERS, *OURS).index)
        lines = [
            (
                variant,
                "-o" if variant in OURS else "--.",
                [(b, r["median_ms"]) for (v, b), r in entry["rows"].items() if v == variant],
            )
            for variant in variants
        ]
        panels[name] = [*lines, ("HBM floor", "k:", list(entry["floor_ms"].items()))]
    title = f"decode step, {environment.get('device')}, torch {environment.get('torch')}"
    plot_log_log(png, title, "median step (ms)", panels)


def main() -> None:
    parser = report_parser(__doc__)
    parser.add_argument("--passes", action="store_true", help="the fusion-passes table (with/without, ratios)")
    args = parser.parse_args()
    shapes, environment = load(args.paths)
    print(passes_table(shapes) if args.passes else table(shapes))
    if args.png:
        plot(shapes, environment, args.png)
        print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
