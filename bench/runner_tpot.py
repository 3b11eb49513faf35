"""Continuous-batching decode benchmark of the graph-replay runner: sync vs scheduler-async vs forward-async.

Qwen3-shaped paged decoder with random weights, paged KV cache with block tables, vLLM-like host prep in numpy
(requests arriving and finishing). Per (shape, batch, mode): TPOT (median step wall time), host time per step
(numpy prep + launch), device time per step (replay events), device gaps, and overlap efficiency =
step ÷ max(host, device). Then a race stress: forward-async against sync with random host delays and random
device-side sleeps on every stream, tokens compared. JSON with device, versions, date, raw figures.

    python bench/bench_runner.py --shapes qwen3-0.6b --out bench/results/runner_h100_qwen3-0.6b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ascend_graph.device import get_device
from ascend_graph.models.qwen3 import SHAPES, build_paged_decoder
from ascend_graph.runner import MODES, GraphRunner, RunnerConfig
from ascend_graph.runner.harness import DecodeHarness, Workload, device_delays, paged_runner, paged_step
from bench.common import environment


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def run_mode(model_step: Any, workload: Workload, mode: str, sizes: tuple[int, ...], device: str) -> dict[str, Any]:
    runner = GraphRunner(
        model_step,
        workload.fields(),
        workload.max_batch,
        get_device(device),
        RunnerConfig(mode=mode, capture_sizes=sizes),
    )
    start = time.perf_counter()
    runner.capture()
    capture_s = time.perf_counter() - start
    result = DecodeHarness(workload).run(runner)
    metrics = runner.metrics
    host_ms = [prep + copy for prep, copy in zip(result.host_prep_ms, metrics.host_copy_ms, strict=False)]
    steady = result.step_wall_ms[len(result.step_wall_ms) // 10 :]  # drop the ramp-up tenth
    tpot, host, device_ms = _median(steady), _median(host_ms), _median(metrics.device_ms)
    row = {
        "mode": mode,
        "batch": workload.max_batch,
        "steps": result.steps,
        "tpot_ms": tpot,
        "host_ms": host,  # numpy prep + launch work, blocking waits excluded
        "host_wait_ms": _median(metrics.host_wait_ms),
        "device_ms": device_ms,
        "device_gap_ms": _median(metrics.device_gap_ms),
        "overlap_efficiency": tpot / max(host, device_ms) if tpot and host and device_ms else None,
        "capture_s": capture_s,
        "step_wall_ms": result.step_wall_ms,
        "host_prep_ms": result.host_prep_ms,
        "host_launch_ms": metrics.host_copy_ms,
        "host_wait_ms_all": metrics.host_wait_ms,
        "device_step_ms": metrics.device_ms,
        "tokens_digest": hash(tuple(sorted((k, tuple(v)) for k, v in result.tokens.items()))),
    }
    del runner
    torch.cuda.empty_cache() if device == "cuda" else None
    return row


def stress(device: str, steps_target: int) -> dict[str, Any]:
    """forward-async under random host and device delays against sync: identical tokens or a failure."""
    shape = SHAPES["tiny"]
    workload = Workload.race_stress(max(8, steps_target // 6), shape.vocab, seed=13)
    tokens = {}
    steps = {}
    for mode in ("sync", "forward-async"):
        config = RunnerConfig(mode=mode, capture_sizes=(1, 2, 4, 8), poison=True)
        runner = paged_runner(shape, workload, device, config)
        delays = device_delays(0.0005, 0.3) if mode == "forward-async" else None
        result = DecodeHarness(workload, host_delay_s=0.0003 if delays else 0.0, device_delay=delays).run(runner)
        tokens[mode], steps[mode] = result.tokens, len(runner.metrics.device_ms)
    return {
        "forward_async_steps": steps["forward-async"],
        "requests": workload.requests,
        "tokens_equal_to_sync": tokens["sync"] == tokens["forward-async"],
    }


def run_shape(
    entry: dict[str, Any],
    batches: list[int],
    sizes: tuple[int, ...],
    dtype: torch.dtype,
    args: argparse.Namespace,
    save_partial: Callable[[], None],
) -> None:
    """Every mode at every batch row for the model shape `entry` names, its rows appended there (the result saved
    after each row)."""
    shape_name = entry["name"]
    block_size, max_blocks = 16, 32  # 512 positions per sequence
    model = build_paged_decoder(
        shape_name, max(batches) * max_blocks + 1, block_size, max_blocks, dtype=dtype, device=args.device
    )
    runnable = torch.compile(model, dynamic=True) if args.lowering == "inductor" else model
    with torch.inference_mode():
        for batch in batches:
            workload = Workload(
                requests=batch * args.rounds,
                max_batch=batch,
                block_size=block_size,
                num_blocks=max(batches) * max_blocks + 1,
                max_blocks_per_seq=max_blocks,
                prompt_len=(192, 320),
                new_tokens=(48, 96),
                arrivals_per_step=0,
                vocab=model.shape.vocab,
                seed=batch,
            )
            for mode in args.modes.split(","):
                torch.manual_seed(0)
                model.kv_cache.normal_()  # the prompts' KV: random (never zeros), the same for every mode
                try:
                    fitting = tuple(size for size in sizes if size <= batch)
                    row = run_mode(paged_step(runnable), workload, mode, fitting, args.device)
                except Exception as error:  # recorded, not hidden
                    row = {"mode": mode, "batch": batch, "error": repr(error)[:2000]}
                entry["rows"].append(row)
                print(shape_name, {k: v for k, v in row.items() if not isinstance(v, list)}, flush=True)
                save_partial()
    del model, runnable
    torch._dynamo.reset()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="qwen3-0.6b")
    parser.add_argument("--batches", default="1,8,32,128,256")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--lowering", choices=["aten", "inductor"], default="inductor")
    parser.add_argument("--rounds", type=int, default=3, help="requests per batch row")
    parser.add_argument("--stress-steps", type=int, default=3000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=".out/bench_runner.json")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    sizes = tuple(sorted(set(batches)))
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    result: dict[str, Any] = {
        "benchmark": "continuous-batching decode, paged KV, graph-replay runner",
        "environment": environment(torch.device(args.device)),
        "lowering": args.lowering,
        "shapes": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch._dynamo.config.cache_size_limit = 64
    for shape_name in args.shapes.split(","):
        entry: dict[str, Any] = {"name": shape_name, "rows": []}
        result["shapes"].append(entry)
        run_shape(entry, batches, sizes, dtype, args, lambda: save(result, out))
    if args.stress_steps:
        with torch.inference_mode():
            result["stress"] = stress(args.device, args.stress_steps)
        print("stress", result["stress"], flush=True)
    save(result, out)
    return result


def save(result: dict[str, Any], out: Path) -> None:
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
