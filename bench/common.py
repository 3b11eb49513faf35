"""What every benchmark of bench/ records beside its figures: the commit and the machine."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def git_commit() -> str | None:
    """HEAD of the checkout bench/ runs from; outside git (the device machine) AG_COMMIT, else None."""
    if os.environ.get("AG_COMMIT"):
        return os.environ["AG_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def plot_log_log(png: Any, title: str, ylabel: str, panels: dict[str, list[tuple[str, str, list[Any]]]]) -> None:
    """One log-log panel per name (x: batch); each (label, matplotlib style, [(x, y), ...]) one line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for axis, (name, lines) in zip(axes[0], panels.items(), strict=True):
        for label, style, points in lines:
            ordered = sorted(points)
            axis.plot([x for x, _ in ordered], [y for _, y in ordered], style, label=label)
        axis.set(xscale="log", yscale="log", xlabel="batch", ylabel=ylabel, title=name)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(png, dpi=110)


def report_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every report of bench/ takes: the result JSONs, and where to draw the PNG."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--png")
    return parser
