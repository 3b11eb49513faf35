"""One rank's tensor-parallel decode session: builds model shards, runs the runner over a workload, compares.

Used by `tp_decode` (the torchrun entry point) and the CPU tests. Every rank runs the same calls in the same order
with the same seeded workload, so the schedule (which rows, which padded size, how many steps) is a function of
the workload alone, never of host timing; `Session.decode` checks it after every run by gathering each rank's
(steps, token digest) through the gloo control group.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ascend_graph.device import get_device
from ascend_graph.models.qwen3 import SHAPES, Qwen3Shape
from ascend_graph.models.qwen3_tp import TensorParallel, TPPagedQwen3Decoder, build_tp_paged_decoder
from ascend_graph.runner import GraphRunner, RunnerConfig
from ascend_graph.runner.distributed import TensorParallelContext, Watchdog
from ascend_graph.runner.harness import DecodeHarness, HarnessResult, Workload, device_delays, paged_step

BLOCK_SIZE = 16


@dataclass(frozen=True)
class WorkloadSpec:
    """The continuous-batching traffic of one part of the session (requests per batch row, lengths, arrivals)."""

    rounds: int = 2  # requests = batch * rounds
    prompt_len: tuple[int, int] = (0, 20)
    new_tokens: tuple[int, int] = (2, 12)
    arrivals_per_row: float = 0.25  # arrivals per step = batch * this; 0: all at once

    @property
    def max_blocks(self) -> int:
        return -(-(self.prompt_len[1] + self.new_tokens[1]) // BLOCK_SIZE)


@dataclass(frozen=True)
class SessionOptions:
    shape: str = "tiny"
    device: str = "cpu"
    batches: tuple[int, ...] = (4,)
    capture_sizes: tuple[int, ...] = (1, 2, 4)
    seed: int = 0
    check: WorkloadSpec = WorkloadSpec()
    bench: WorkloadSpec = WorkloadSpec(rounds=2, prompt_len=(192, 320), new_tokens=(48, 96), arrivals_per_row=0.0)
    host_delay_s: float = 0.002  # forward-async stress: uniform host sleep per step, per-rank random stream
    device_delay_s: float = 0.001  # and device-side sleeps on the runner's streams (probability 0.3 per stream)
    layers: int | None = None  # layers of the model; None: the shape's
    reduced_layers: int | None = None  # layers of the model for the torch.compile and broken-variant checks
    compile_lowering: str | None = "aten"  # None: skip the torch.compile(backend="ascend_graph") check
    broken: bool = True  # run the variant without all-reduce, which must give other tokens
    bench_dtype: str | None = None  # "bfloat16" / "float32": run the step-time benchmark; None: skip it
    phase_budget_s: float = 120.0  # watchdog budget of one run (build, capture, decode)
    compile_budget_s: float = 300.0

    def __post_init__(self) -> None:
        allowed = {
            "shape": tuple(SHAPES),
            "device": ("cpu", "cuda"),
            "compile_lowering": (None, "aten", "inductor"),
            "bench_dtype": (None, "bfloat16", "float32"),
        }
        for name, values in allowed.items():
            if getattr(self, name) not in values:
                raise ValueError(f"tp session: {name}={getattr(self, name)!r} is not allowed; allowed: {values}")
        if not self.batches or any(b <= 0 for b in self.batches):
            raise ValueError(f"tp session: batches={self.batches!r} is not allowed; they must be positive")

    def full_shape(self, layers: int | None = None) -> Qwen3Shape:
        shape = SHAPES[self.shape]
        return shape if layers is None else dataclasses.replace(shape, layers=layers)

    def workload(self, spec: WorkloadSpec, batch: int) -> Workload:
        max_blocks = max(spec.max_blocks, 1)
        return Workload(
            requests=batch * spec.rounds,
            max_batch=batch,
            block_size=BLOCK_SIZE,
            num_blocks=max(self.batches) * max_blocks + 1,
            max_blocks_per_seq=max_blocks,
            prompt_len=spec.prompt_len,
            new_tokens=spec.new_tokens,
            arrivals_per_step=batch * spec.arrivals_per_row,
            vocab=SHAPES[self.shape].vocab,
            seed=self.seed * 1000 + batch,
        )

    def sizes_for(self, batch: int) -> tuple[int, ...]:
        return tuple(sorted({size for size in self.capture_sizes if size < batch} | {batch}))


@dataclass
class Run:
    """One decode run on this rank: the tokens and the figures."""

    label: str
    tokens: dict[int, list[int]]
    figures: dict[str, Any]
    agree: bool = True
    checks: dict[str, Any] = field(default_factory=dict)


def digest(tokens: dict[int, list[int]]) -> str:
    return hashlib.sha256(json.dumps(sorted(tokens.items())).encode()).hexdigest()[:16]


def first_mismatch(reference: dict[int, list[int]], tokens: dict[int, list[int]]) -> dict[str, Any] | None:
    """Where `tokens` first leaves `reference`: request id and token index, or None when they are equal."""
    if reference == tokens:
        return None
    for rid in sorted(set(reference) | set(tokens)):
        want, got = reference.get(rid, []), tokens.get(rid, [])
        if want != got:
            index = next(
                (i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got))
            )
            return {"request": rid, "index": index, "reference": want[index : index + 4], "got": got[index : index + 4]}
    return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class Session:
    """What one rank does; every method is called in the same order on every rank."""

    def __init__(self, context: TensorParallelContext, options: SessionOptions, watchdog: Watchdog) -> None:
        self.context, self.options, self.watchdog = context, options, watchdog
        self.failures: list[str] = []
        self.logits: dict[str, torch.Tensor] = {}  # fixed-step logits by "<dtype>_tp1" / "<dtype>_tpw"

    @property
    def rank(self) -> int:
        return self.context.rank

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print(f"[rank {self.rank}] FAIL {message}", flush=True)

    def parallel(self, world_size: int, all_reduce: bool = True) -> TensorParallel:
        rank = self.rank if world_size > 1 else 0
        return TensorParallel(rank, world_size, self.context.group_name if world_size > 1 else None, all_reduce)

    def build(
        self, world_size: int, dtype: torch.dtype, layers: int | None = None, all_reduce: bool = True
    ) -> TPPagedQwen3Decoder:
        spec = max((self.options.check, self.options.bench), key=lambda s: s.max_blocks)
        workload = self.options.workload(spec, max(self.options.batches))
        with self.watchdog.phase(f"build tp{world_size} {dtype}", self.options.phase_budget_s):
            return build_tp_paged_decoder(
                self.options.full_shape(layers if layers is not None else self.options.layers),
                workload.num_blocks,
                BLOCK_SIZE,
                workload.max_blocks_per_seq,
                self.parallel(world_size, all_reduce),
                dtype=dtype,
                device=self.context.device,
                seed=self.options.seed,
            )

    def release(self) -> None:
        """Free the runs' graphs and memory now: a captured CUDA graph holding NCCL kernels keeps a reference on
        the communicator, and destroying the process group waits for every such graph to be destroyed."""
        gc.collect()
        if self.context.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    # --- decoding -------------------------------------------------------------------------------------------
    def decode(
        self,
        label: str,
        model: TPPagedQwen3Decoder,
        workload: Workload,
        mode: str = "sync",
        eager: bool = False,
        delays: bool = False,
        poison: bool = True,
        step: Any = None,
        sizes: tuple[int, ...] | None = None,
        expect_agree: bool = True,
    ) -> Run:
        """Serve `workload` on a fresh runner over `model` (cache refilled from the seed) and check that every
        rank ran the same number of steps and sampled the same tokens (`expect_agree`)."""
        with self.watchdog.phase(label, self.options.phase_budget_s):
            model.fill_cache(self.options.seed)
            config = RunnerConfig(
                mode=mode, capture_sizes=sizes or self.options.sizes_for(workload.max_batch), eager=eager, poison=poison
            )
            device = get_device(self.context.device.type)
            runner = GraphRunner(step or paged_step(model), workload.fields(), workload.max_batch, device, config)
            start = time.perf_counter()
            runner.capture()
            capture_s = time.perf_counter() - start
            delay_seed = 10_007 * (self.rank + 1) + workload.seed  # a different random stream on each rank
            harness = DecodeHarness(
                workload,
                host_delay_s=self.options.host_delay_s if delays else 0.0,
                device_delay=device_delays(self.options.device_delay_s) if delays else None,
                delay_seed=delay_seed,
            )
            result = harness.run(runner)
            figures = self._figures(result, runner, capture_s, mode, eager, delays, workload)
            figures["delay_seed"] = delay_seed if delays else None
            del runner
            self.release()
            run = Run(label, result.tokens, figures)
            gathered = self.context.gather((result.steps, digest(result.tokens)))
        run.agree = all(value == gathered[0] for value in gathered)
        if expect_agree and not run.agree:
            self.fail(f"{label}: ranks disagree on (steps, token digest): {gathered}")
        print(f"[rank {self.rank}] {label}: {result.steps} steps, tpot {figures['tpot_ms']:.3f} ms", flush=True)
        return run

    @staticmethod
    def _figures(
        result: HarnessResult,
        runner: GraphRunner,
        capture_s: float,
        mode: str,
        eager: bool,
        delays: bool,
        workload: Workload,
    ) -> dict[str, Any]:
        metrics = runner.metrics
        steady = result.step_wall_ms[len(result.step_wall_ms) // 10 :]  # the ramp-up tenth dropped
        host = [prep + copy for prep, copy in zip(result.host_prep_ms, metrics.host_copy_ms, strict=False)]
        return {
            "mode": mode,
            "graph": not eager,
            "delays": delays,
            "batch": workload.max_batch,
            "requests": workload.requests,
            "steps": result.steps,
            "wall_s": result.wall_s,
            "capture_s": capture_s,
            "tpot_ms": _median(steady),
            "device_ms": _median(metrics.device_ms),
            "host_ms": _median(host),
            "device_gap_ms": _median(metrics.device_gap_ms),
            "step_wall_ms": result.step_wall_ms,
            "device_step_ms": metrics.device_ms,
            "tokens_digest": digest(result.tokens),
        }

    def compare(self, run: Run, reference: Run, expect_equal: bool = True) -> None:
        mismatch = first_mismatch(reference.tokens, run.tokens)
        run.checks = {
            "reference": reference.label,
            "tokens_equal_reference": mismatch is None,
            "first_mismatch": mismatch,
        }
        if expect_equal and mismatch is not None:
            self.fail(f"{run.label}: tokens differ from {reference.label} at {mismatch}")
        if not expect_equal and mismatch is None:
            self.fail(f"{run.label}: tokens equal {reference.label}, but this variant must differ")

    # --- logits of one fixed step ---------------------------------------------------------------------------
    def fixed_step_logits(self, model: TPPagedQwen3Decoder, batch: int = 8) -> torch.Tensor:
        """Logits of one decode step on fixed inputs over the seeded cache: rows at random positions, own blocks."""
        rng = np.random.default_rng(self.options.seed)
        max_blocks = model.max_blocks_per_seq
        batch = min(batch, (model.num_blocks - 1) // max_blocks)
        positions = rng.integers(0, max_blocks * BLOCK_SIZE, batch)
        tables = 1 + np.arange(batch)[:, None] * max_blocks + np.arange(max_blocks)[None, :]
        slots = tables[np.arange(batch), positions // BLOCK_SIZE] * BLOCK_SIZE + positions % BLOCK_SIZE
        device = self.context.device

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, dtype=torch.int64, device=device)

        with self.watchdog.phase("fixed-step logits", self.options.phase_budget_s):
            model.fill_cache(self.options.seed)
            token_ids = tensor(rng.integers(0, model.shape.vocab, batch))
            logits = model(token_ids, tensor(positions), tensor(slots), tensor(tables), tensor(positions + 1))
            return logits.float().cpu()
