"""A continuous-batching decode harness: the vLLM-like host side that drives a GraphRunner.

Requests arrive and finish; each owns blocks of a paged KV cache; every step the host builds the step's inputs
in numpy (token ids of new requests, which previous row each running request continues, positions, slot mapping,
block tables, sequence lengths), optionally sleeps a random while (host delay), and launches the step. In the
async modes it reads the tokens of the previous step after launching the next one.

Requests finish after a number of new tokens known on the host (`--ignore-eos` style), so the schedule, and hence
the tokens, must be identical in every mode: that is what the stress tests compare.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .buffers import Field
from .runner import GraphRunner, RunnerConfig, StepHandle


@dataclass
class Request:
    rid: int
    arrival_step: int
    first_token: int
    prompt_len: int
    max_new: int
    blocks: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    steps_launched: int = 0


@dataclass(frozen=True)
class Workload:
    """Which requests arrive when: a seeded stream of decode requests."""

    requests: int = 64
    max_batch: int = 8
    block_size: int = 16
    num_blocks: int = 256
    max_blocks_per_seq: int = 8
    prompt_len: tuple[int, int] = (0, 0)
    new_tokens: tuple[int, int] = (4, 40)
    arrivals_per_step: float = 0.5
    vocab: int = 512
    seed: int = 0

    @classmethod
    def race_stress(cls, requests: int, vocab: int, seed: int, arrivals_per_step: float = 0.4) -> Workload:
        """The race stress of the tests and the runner benchmark: at most 8 rows, requests of 0-40 prompt and
        2-60 new tokens arriving `arrivals_per_step` per step (0: all at once), so that rows join and leave often."""
        return cls(
            requests=requests,
            max_batch=8,
            num_blocks=160,
            new_tokens=(2, 60),
            prompt_len=(0, 40),
            arrivals_per_step=arrivals_per_step,
            vocab=vocab,
            seed=seed,
        )

    def make(self) -> list[Request]:
        rng = random.Random(self.seed)
        step, requests = 0, []
        for rid in range(self.requests):
            step += int(rng.expovariate(self.arrivals_per_step)) if self.arrivals_per_step > 0 else 0
            requests.append(
                Request(
                    rid, step, rng.randrange(self.vocab), rng.randint(*self.prompt_len), rng.randint(*self.new_tokens)
                )
            )
        return requests

    def fields(self) -> tuple[Field, ...]:
        """The paged decoder's per-row inputs; padded rows write the null block 0 and attend to one slot."""
        return (
            Field("positions"),
            Field("slot_mapping"),
            Field("block_tables", row_shape=(self.max_blocks_per_seq,)),
            Field("seq_lens", pad=1),
        )


@dataclass
class HarnessResult:
    tokens: dict[int, list[int]]
    steps: int
    wall_s: float
    host_prep_ms: list[float]
    step_wall_ms: list[float]


class DecodeHarness:
    """Schedules requests onto rows and builds each step's inputs in numpy."""

    def __init__(
        self,
        workload: Workload,
        host_delay_s: float = 0.0,
        device_delay: Callable[[GraphRunner, random.Random], None] | None = None,
        detect_silent_syncs: bool = False,
        delay_seed: int | None = None,
    ) -> None:
        self.workload = workload
        self.detect_silent_syncs = detect_silent_syncs
        self.host_delay_s = host_delay_s
        self.device_delay = device_delay
        # The delays' random stream; tensor-parallel ranks pass different seeds so that their delays differ.
        self.rng = random.Random(workload.seed + 1 if delay_seed is None else delay_seed)

    def _blocks_needed(self, request: Request) -> int:
        return -(-(request.prompt_len + request.max_new) // self.workload.block_size)

    def _batch(self, running: list[Request], previous_rows: dict[int, int]) -> dict[str, np.ndarray]:
        w, size = self.workload, len(running)
        batch = {
            "token_ids": np.zeros(size, np.int64),
            "prev_rows": np.full(size, -1, np.int64),
            "positions": np.zeros(size, np.int64),
            "slot_mapping": np.zeros(size, np.int64),
            "block_tables": np.zeros((size, w.max_blocks_per_seq), np.int64),
            "seq_lens": np.zeros(size, np.int64),
        }
        for row, request in enumerate(running):
            position = request.prompt_len + request.steps_launched
            if request.steps_launched == 0:
                batch["token_ids"][row] = request.first_token
            else:
                batch["prev_rows"][row] = previous_rows[request.rid]
            batch["positions"][row] = position
            block = request.blocks[position // w.block_size]
            batch["slot_mapping"][row] = block * w.block_size + position % w.block_size
            batch["block_tables"][row, : len(request.blocks)] = request.blocks
            batch["seq_lens"][row] = position + 1
        return batch

    def run(self, runner: GraphRunner, max_steps: int = 1_000_000) -> HarnessResult:
        """Serve the whole workload (or `max_steps` steps); under the silent-sync detector if asked."""
        detector = runner.detect_silent_syncs() if self.detect_silent_syncs else contextlib.nullcontext()
        with detector:
            return self._run(runner, max_steps)

    def _run(self, runner: GraphRunner, max_steps: int) -> HarnessResult:
        w = self.workload
        waiting = sorted(self.workload.make(), key=lambda r: r.arrival_step)
        total = len(waiting)
        free_blocks = list(range(w.num_blocks - 1, 0, -1))  # block 0 is the null block
        running: list[Request] = []
        finished: dict[int, list[int]] = {}
        previous_rows: dict[int, int] = {}
        in_flight: tuple[StepHandle, list[Request]] | None = None
        host_prep, step_wall = [], []
        start = last = time.perf_counter()
        step = 0
        while (waiting or running or in_flight) and step < max_steps:
            prep_start = time.perf_counter()
            while waiting and waiting[0].arrival_step <= step and len(running) < w.max_batch:
                if len(free_blocks) < self._blocks_needed(waiting[0]):
                    break
                request = waiting.pop(0)
                request.blocks = [free_blocks.pop() for _ in range(self._blocks_needed(request))]
                running.append(request)
            launched = None
            if running:
                batch = self._batch(running, previous_rows)
                if self.host_delay_s:
                    time.sleep(self.rng.uniform(0, self.host_delay_s))
                host_prep.append((time.perf_counter() - prep_start) * 1e3)
                if self.device_delay is not None:
                    self.device_delay(runner, self.rng)
                handle = runner.launch(batch)
                launched = (handle, list(running))
                previous_rows = {request.rid: row for row, request in enumerate(running)}
                for request in running:
                    request.steps_launched += 1
                for request in [r for r in running if r.steps_launched == r.max_new]:
                    running.remove(request)
                    free_blocks.extend(reversed(request.blocks))  # reused only by later steps: stream order
            if in_flight is not None:  # read the previous step late, after launching this one
                self._collect(runner, *in_flight, finished)
            in_flight = launched
            if runner.config.mode == "sync" and in_flight is not None:
                self._collect(runner, *in_flight, finished)
                in_flight = None
            now = time.perf_counter()
            step_wall.append((now - last) * 1e3)
            last = now
            step += 1
        runner.finish()
        if len(finished) != total and step < max_steps:
            raise RuntimeError(f"harness lost requests: {total - len(finished)} of {total} unfinished")
        return HarnessResult(finished, step, time.perf_counter() - start, host_prep, step_wall)

    @staticmethod
    def _collect(runner: GraphRunner, handle: StepHandle, rows: list[Request], finished: dict[int, list[int]]) -> None:
        tokens = runner.tokens(handle)
        for request, token in zip(rows, tokens.tolist(), strict=True):
            request.generated.append(token)
            if len(request.generated) == request.max_new:
                finished[request.rid] = request.generated


def device_delays(max_s: float, probability: float = 0.3) -> Callable[[GraphRunner, random.Random], None]:
    """Random device-side sleeps on the runner's streams (CUDA: torch.cuda._sleep; CPU: a sleeping work item)."""

    def delay(runner: GraphRunner, rng: random.Random) -> None:
        streams = {id(s): s for s in (runner.streams.copy, runner.streams.compute, runner.streams.fetch)}
        for stream in streams.values():
            if rng.random() >= probability:
                continue
            seconds = rng.uniform(0, max_s)
            if runner.device.kind == "cuda":
                with torch.cuda.stream(stream):
                    torch.cuda._sleep(int(seconds * 1.5e9))  # cycles at ~1.5 GHz
            else:
                stream.submit(lambda seconds=seconds: time.sleep(seconds))

    return delay


def paged_runner(
    shape: Any, workload: Workload, device: str, config: RunnerConfig, dtype: torch.dtype = torch.float32
) -> GraphRunner:
    """A captured GraphRunner over a fresh paged Qwen3 decoder sized for `workload` (random weights)."""
    from ..device import get_device
    from ..models.qwen3 import build_paged_decoder

    model = build_paged_decoder(
        shape, workload.num_blocks, workload.block_size, workload.max_blocks_per_seq, dtype=dtype, device=device
    )
    runner = GraphRunner(paged_step(model), workload.fields(), workload.max_batch, get_device(device), config)
    runner.capture()
    return runner


def paged_step(model: Any) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """The runner's step function for a PagedQwen3Decoder (or anything with its forward signature)."""

    def step(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(
            inputs["token_ids"], inputs["positions"], inputs["slot_mapping"], inputs["block_tables"], inputs["seq_lens"]
        )

    return step
