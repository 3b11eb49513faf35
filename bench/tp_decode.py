"""Tensor-parallel decode on the graph-replay runner: tokens across ranks, and step time TP=W vs TP=1.

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \\
        torchrun --nproc-per-node 2 -m bench.tp_decode --preset gpu --out $OUT/tp_decode.json
    python -m bench.tp_decode --preset cpu --spawn 2     # the CPU lane, gloo

Every rank builds its shards of the paged Qwen3 decoder (models/qwen3_tp.py: column/row-parallel linears, NCCL or
gloo all-reduce through torch.distributed, embeddings and lm_head replicated) from one seed, and serves the same
seeded continuous-batching workload (runner/harness.py). Parts, in order:

1. tokens (float32): per batch size, TP=1 eager on each rank's own device is the reference; TP=W captured by the
   runner in sync mode, in forward-async mode with random host and device delays drawn differently on each rank,
   and TP=W eager must sample exactly its tokens, on every rank, in the same number of steps.
2. logits of one fixed step: float32 max |TP=W - TP=1| within `FLOAT32_LOGITS_RTOL` of max |logits|; bfloat16
   (with --bench-dtype) max |TP=W - TP=1| within twice bf16's own max |TP=1 bf16 - TP=1 float32|.
3. a model with fewer layers: TP=W through torch.compile(backend="ascend_graph") (its own captures, driven by the
   runner in eager mode) gives TP=1's tokens; the variant without all-reduce must not.
4. step time (with --bench-dtype): per batch, TP=1 and TP=W, eager sync, graph sync, graph forward-async.

Rank 0 writes one JSON (environment of every rank, options, every raw figure, failures). Each run sits under a
watchdog budget: a hang exits with the phase's name instead of a stuck job (runner/distributed.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ascend_graph.backend import ascend_graph_backend
from ascend_graph.counters import counters, reset_counters
from ascend_graph.runner.distributed import Watchdog, init_tensor_parallel, multicast_off, spawn
from ascend_graph.runner.harness import paged_step
from bench.common import environment
from bench.tp_session import Run, Session, SessionOptions, WorkloadSpec

# float32 logits TP=W vs TP=1: the summation order differs (partial sums, then all-reduce), so errors of ~1e-6
# relative are expected (tiny shape on the CPU: 2.5e-7 of max 0.53). A missing or wrong shard gives O(1).
FLOAT32_LOGITS_RTOL = 1e-4  # of max |logits|
# bfloat16: TP=W vs TP=1 may differ by at most this many times what bf16 itself changes (TP=1 bf16 vs float32).
BFLOAT16_ROUNDING_FACTOR = 2.0

PRESETS = {
    # The CPU lane (2 cores): tiny shape, gloo.
    "cpu": SessionOptions(),
    # Two GPUs: the Qwen3-8B shape; float32 for token identity, bfloat16 for step time; the compile and broken
    # checks on 4 layers of it (aten lowering, to keep the call short).
    "gpu": SessionOptions(
        shape="qwen3-8b",
        device="cuda",
        batches=(1, 8, 32),
        capture_sizes=(1, 8, 32),
        check=WorkloadSpec(rounds=2, prompt_len=(64, 320), new_tokens=(16, 48), arrivals_per_row=0.25),
        host_delay_s=0.003,
        device_delay_s=0.002,
        reduced_layers=4,
        bench_dtype="bfloat16",
        phase_budget_s=180.0,
        compile_budget_s=300.0,
    ),
}


def part_tokens(session: Session, world: int) -> list[Run]:
    options, runs = session.options, []
    references: dict[int, Run] = {}
    model = session.build(1, torch.float32)
    session.logits["float32_tp1"] = session.fixed_step_logits(model)
    for batch in options.batches:
        workload = options.workload(options.check, batch)
        references[batch] = session.decode(f"tp1 eager sync b{batch}", model, workload, eager=True)
        runs.append(references[batch])
    del model
    session.release()
    model = session.build(world, torch.float32)
    session.logits["float32_tpw"] = session.fixed_step_logits(model)
    for batch in options.batches:
        workload = options.workload(options.check, batch)
        for label, mode, eager, delays in (
            (f"tp{world} graph sync b{batch}", "sync", False, False),
            (f"tp{world} graph forward-async delays b{batch}", "forward-async", False, True),
            (f"tp{world} eager sync b{batch}", "sync", True, False),
        ):
            run = session.decode(label, model, workload, mode=mode, eager=eager, delays=delays)
            session.compare(run, references[batch])
            runs.append(run)
    del model
    session.release()
    return runs


def part_reduced(session: Session, world: int) -> list[Run]:
    """torch.compile(backend="ascend_graph") at TP=W, and the broken variant, on a model with fewer layers."""
    options = session.options
    layers, batch = options.reduced_layers, max(options.batches)
    workload = options.workload(options.check, batch)
    model = session.build(1, torch.float32, layers)
    reference = session.decode(f"reduced tp1 eager sync b{batch}", model, workload, eager=True)
    runs = [reference]
    del model
    if options.compile_lowering is not None:
        model = session.build(world, torch.float32, layers)
        # No size 1: there the backend buckets the wrong symbol (dynamo specialises the batch to 1 and the
        # block-table width is the graph's only symbol left) and, on the CPU, takes one-row index tensors for host
        # values. The runner pads one-row steps to the next size.
        sizes = [size for size in options.sizes_for(batch) if size > 1] or [2]
        compiled = torch.compile(
            model,
            backend=ascend_graph_backend,  # the callable, as registered or not
            dynamic=True,
            options={"capture_sizes": sizes, "lowering": options.compile_lowering, "pad_values": model.pad_values},
        )
        reset_counters()
        with session.watchdog.phase("torch.compile ascend_graph warm-up", options.compile_budget_s):
            start = time.perf_counter()
            for size in sorted(sizes, reverse=True):  # compile and capture now, on the host thread
                compiled(*_padded_inputs(model, size))
            compile_s = time.perf_counter() - start
        label = f"reduced tp{world} ascend_graph-compiled sync b{batch}"
        run = session.decode(label, model, workload, eager=True, step=paged_step(compiled), sizes=tuple(sizes))
        run.figures.update(compile_s=compile_s, counters=counters())
        session.compare(run, reference)
        if counters()["replays"] == 0 or counters()["eager_calls"] or counters()["eager_fallbacks"]:
            session.fail(f"{label}: the compiled model did not serve every step by replay: {counters()}")
        runs.append(run)
        del model, compiled
        torch._dynamo.reset()
    if options.broken:
        model = session.build(world, torch.float32, layers, all_reduce=False)
        label = f"reduced tp{world} NO all-reduce graph sync b{batch}"
        run = session.decode(label, model, workload, expect_agree=False)  # ranks hold different partial sums
        session.compare(run, reference, expect_equal=False)
        runs.append(run)
        del model
    session.release()
    return runs


def _padded_inputs(model: Any, size: int) -> tuple[torch.Tensor, ...]:
    """Inputs whose every row is a padded row: writes go to the null block."""
    device = model.kv_cache.device
    pads = model.pad_values
    token_ids = torch.zeros(size, dtype=torch.int64, device=device)
    tables = torch.full((size, model.max_blocks_per_seq), pads["block_tables"], dtype=torch.int64, device=device)

    def column(name: str) -> torch.Tensor:
        return torch.full((size,), pads[name], dtype=torch.int64, device=device)

    return token_ids, column("positions"), column("slot_mapping"), tables, column("seq_lens")


def part_bench(session: Session, world: int) -> list[Run]:
    """Step time per batch: TP=1 and TP=W; eager sync, graph sync, graph forward-async (no delays)."""
    options = session.options
    dtype = getattr(torch, options.bench_dtype)
    runs = []
    for tp in (1, world):
        model = session.build(tp, dtype)
        session.logits[f"{options.bench_dtype}_tp{'1' if tp == 1 else 'w'}"] = session.fixed_step_logits(model)
        for batch in options.batches:
            workload = options.workload(options.bench, batch)
            for mode, eager in (("sync", True), ("sync", False), ("forward-async", False)):
                kind = "eager" if eager else "graph"
                run = session.decode(f"bench tp{tp} {kind} {mode} b{batch}", model, workload, mode, eager, poison=False)
                run.figures["tp"] = tp
                runs.append(run)
        del model
        session.release()
    return runs


def logits_checks(session: Session) -> dict[str, Any]:
    logits = session.logits
    largest = logits["float32_tp1"].abs().max().item()
    fp32 = (logits["float32_tpw"] - logits["float32_tp1"]).abs().max().item()
    atol = FLOAT32_LOGITS_RTOL * largest
    checks: dict[str, Any] = {"float32": {"max_abs_diff": fp32, "atol": atol, "max_abs": largest}}
    if fp32 > atol:
        session.fail(f"float32 logits TP=W vs TP=1 differ by {fp32:.3g} > {atol:.3g} ({FLOAT32_LOGITS_RTOL} of max)")
    name = session.options.bench_dtype
    if name is not None and f"{name}_tpw" in logits:
        tp_diff = (logits[f"{name}_tpw"] - logits[f"{name}_tp1"]).abs().max().item()
        rounding = (logits[f"{name}_tp1"] - logits["float32_tp1"]).abs().max().item()
        checks[name] = {"max_abs_diff_tpw_vs_tp1": tp_diff, "max_abs_diff_tp1_vs_float32": rounding}
        if tp_diff > BFLOAT16_ROUNDING_FACTOR * rounding:
            session.fail(
                f"{name} logits TP=W vs TP=1 differ by {tp_diff:.3g}, more than {name} rounding ({rounding:.3g})"
            )
    return checks


def worker(options: SessionOptions, out: str | None) -> dict[str, Any]:
    """One rank (torchrun or `spawn`): all parts, then rank 0 writes the JSON. Returns the result."""
    context = init_tensor_parallel(options.device)
    watchdog = Watchdog(context.rank)
    session = Session(context, options, watchdog)
    world = context.world_size
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for the token-identity part
    environments = context.gather({**environment(context.device), "rank": context.rank, "host": os.uname().nodename})
    result: dict[str, Any] = {
        "benchmark": "tensor-parallel paged Qwen3 decode on the graph-replay runner",
        "environment": environments[0],
        "ranks": environments,
        "world_size": world,
        "backend": context.backend,
        "multicast": multicast_off(),
        "options": dataclasses.asdict(options),
    }
    if len({json.dumps(each, sort_keys=True) for each in context.gather(result["options"])}) != 1:
        raise RuntimeError("tensor parallel: ranks were started with different options")
    parts = [("tokens", part_tokens)]
    if options.compile_lowering is not None or options.broken:
        parts.append(("reduced", part_reduced))
    if options.bench_dtype is not None:
        parts.append(("bench", part_bench))
    with torch.inference_mode():
        for name, part in parts:
            runs = part(session, world)
            result[name] = [_gathered(session, run) for run in runs]
            _write(result, session, out)
        result["logits"] = logits_checks(session)
    failures = context.gather(session.failures)
    result["failures"] = [f"rank {rank}: {failure}" for rank, items in enumerate(failures) for failure in items]
    result["ok"] = not result["failures"]
    _write(result, session, out)
    session.release()
    if context.device.type == "cuda" and os.environ.get("ASCEND_GRAPH_SPAWNED") == "1":
        # Destroying an NCCL group while captured graphs held its kernels hung here on 2 x H200 (torch issue
        # #115388; torchrun's run tore down fine): a spawned worker hands its result back and the parent ends it.
        return result
    with watchdog.phase("teardown (destroy_process_group; results already written)", 60.0):
        torch.distributed.barrier(group=context.control)
        torch.distributed.destroy_process_group()
    return result


def _gathered(session: Session, run: Run) -> dict[str, Any]:
    """One run as a JSON row: label, checks, this rank's tokens digest, every rank's figures."""
    figures = session.context.gather(run.figures)
    return {"label": run.label, "ranks_agree": run.agree, **run.checks, "per_rank": figures}


def _write(result: dict[str, Any], session: Session, out: str | None) -> None:
    if session.rank == 0 and out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        result["written"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        path.write_text(json.dumps(result, indent=1))


def parse(argv: list[str] | None) -> tuple[SessionOptions, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", help="comma-separated batch sizes (default: the preset's)")
    parser.add_argument("--layers", type=int, help="layers of the full model (default: the shape's)")
    parser.add_argument("--compile-lowering", choices=["aten", "inductor", "none"])
    parser.add_argument("--bench-dtype", choices=["bfloat16", "float32", "none"])
    parser.add_argument("--spawn", type=int, default=0, help="start this many local processes (instead of torchrun)")
    parser.add_argument("--timeout", type=float, default=600.0, help="--spawn: seconds before every worker is killed")
    parser.add_argument("--out", default=".out/tp_decode.json")
    args = parser.parse_args(argv)
    options = PRESETS[args.preset]
    changes: dict[str, Any] = {}
    if args.batches:
        changes["batches"] = tuple(int(b) for b in args.batches.split(","))
    if args.compile_lowering:
        changes["compile_lowering"] = None if args.compile_lowering == "none" else args.compile_lowering
    if args.bench_dtype:
        changes["bench_dtype"] = None if args.bench_dtype == "none" else args.bench_dtype
    if args.layers:
        changes["layers"] = args.layers
    return dataclasses.replace(options, **changes), args


def main(argv: list[str] | None = None) -> int:
    multicast_off()  # before anything can start NCCL, and inherited by every child process
    options, args = parse(argv)
    if args.spawn:
        results = spawn(worker, args.spawn, (options, args.out), timeout_s=args.timeout)
        result = results[0]
    else:
        result = worker(options, args.out)
    if not result["ok"]:
        print("FAILED:\n  " + "\n  ".join(result["failures"]), file=sys.stderr, flush=True)
        return 1
    print(f"tensor-parallel decode: all checks passed (rank 0 wrote {args.out})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
