"""Progress bars and plots for the benchmarks.

Progress: tqdm (a dependency of transformers and of ascend-graph) on stderr, so stdout keeps the result lines;
where tqdm is missing a plain counter line is printed instead. Plots: matplotlib (the dev extra), drawn from the
benchmark's JSON result only, never from numbers that are not in it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


class Progress:
    """`with Progress(total, "bench") as bar: ...; bar.update(label)`; `bar.write(line)` prints above the bar."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=description, unit="run", file=sys.stderr, dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, label: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)


def plot_decode_step(result: dict[str, Any], png: str | Path) -> Path:
    """Median step time against batch size, one line per variant, one panel per model shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = result["shapes"]
    figure, axes = plt.subplots(1, max(1, len(shapes)), figsize=(6 * max(1, len(shapes)), 4.2), squeeze=False)
    for axis, shape in zip(axes[0], shapes, strict=False):
        variants: dict[str, list[tuple[int, float]]] = {}
        for row in shape["rows"]:
            if "median_ms" in row:
                variants.setdefault(row["variant"], []).append((row["batch"], row["median_ms"]))
        for variant, points in variants.items():
            points.sort()
            axis.plot([b for b, _ in points], [ms for _, ms in points], marker="o", label=variant)
        axis.set_xscale("log", base=2)
        batches = sorted({b for points in variants.values() for b, _ in points})
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.minorticks_off()
        axis.set_xlabel("batch (tokens per decode step)")
        axis.set_ylabel("median step time, ms")
        axis.set_title(f"{shape['name']} ({result['dtype']})")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    environment = result["environment"]
    figure.suptitle(
        f"decode step on {environment['device']}, torch {environment['torch']}, {environment['date']}", fontsize=9
    )
    figure.tight_layout()
    path = Path(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
