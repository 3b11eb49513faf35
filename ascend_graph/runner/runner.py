"""The graph-replay runner: decode steps on captured graphs, with the host one step ahead of the device.

Three modes behind `RunnerConfig.mode`, the seed's table:

- "sync": prepare N, copy, replay, wait, read the tokens, then prepare N+1. Nothing overlaps.
- "scheduler-async": the host prepares N+1 while N runs, but there is one staging set and one static set, all
  device work on one stream: the copy of N+1's inputs waits behind replay N, and the host waits for the copy of
  N before it rewrites the staging set.
- "forward-async": two staging sets and two static sets, one captured graph per (size, set). The copy of N+1
  goes on a copy stream into the other static set while replay N runs; replay N+1 waits only for its copy and
  for replay N (through the compute stream's order).

In every mode the sampled tokens of step N reach step N+1 on the device: each row of N+1 names the row of N it
continues (`prev_rows`, -1 for a new request whose token comes from the host), and the captured graph gathers
`prev.sampled[prev_rows]`. Tokens go to the host on a fetch stream into a pinned buffer with an event and are read
late (`tokens()`), never inside the step loop.

The five hazards of docs/design.md, and what stops each:
1. staging reuse before its copy ran: the host waits on the set's `copied` event (`guard_staging`; switching it off
   exists only so a test can show the bug);
2. non_blocking copy from unpinned memory: every host-to-device copy goes through `_h2d`, which in debug mode
   raises `SilentSyncError` naming the caller's line (sync_check.py also catches user code);
3. static inputs rewritten while a replay reads them: the copy stream waits on the set's `replayed` event;
4. per-step host reads of device tokens: tokens reach the next step on the device; the host reads them one step
   late, after the fetch event;
5. host-side ordering of device work: only stream/event dependencies (`wait_event`), no device-wide sync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..capture import capture_graph
from ..counters import Count, bump
from ..device import GraphDevice
from ..signature import GraphSignature
from ..staging import SetRing
from .buffers import POISON, TOKEN_FIELDS, Field, StagingSet, StaticSet
from .sync_check import SilentSyncDetector, SilentSyncError, caller_line

logger = logging.getLogger(__name__)

MODES = ("sync", "scheduler-async", "forward-async")

# The model step: {field name: tensor[size, ...]} (token_ids already resolved on the device) -> logits[size, vocab]
StepFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class RunnerConfig:
    mode: str = "forward-async"
    capture_sizes: tuple[int, ...] = (1, 2, 4, 8)
    debug: bool = False  # raise SilentSyncError on a non_blocking copy from unpinned memory
    guard_staging: bool = True  # only tests switch this off, to show that hazard 1 produces wrong tokens
    poison: bool = False  # fill freed host buffers with POISON, so a protocol bug reads a recognisable value
    warmup_iters: int = 2
    # Pinned staging sets in rotation; default: one per static set. forward-async with a single staging set is
    # valid (the `copied` guard orders it) and is the configuration where that guard alone prevents hazard 1.
    staging_sets: int | None = None
    # One graph memory pool per static set instead of one for all graphs.
    pool_per_set: bool = False
    # Run the step body eagerly on the compute stream at every launch instead of replaying a captured graph:
    # the no-graph baseline (same buffers, streams and events; the model may itself be torch.compile'd).
    eager: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"runner config: mode={self.mode!r} is not allowed; mode must be one of {MODES}")
        sizes = self.capture_sizes
        if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(
                f"runner config: capture_sizes={sizes!r} is not allowed; it must be distinct positive integers"
            )
        object.__setattr__(self, "capture_sizes", tuple(sorted(sizes)))
        if self.staging_sets is not None and self.staging_sets not in (1, 2):
            raise ValueError(f"runner config: staging_sets={self.staging_sets!r} is not allowed; it must be 1 or 2")

    @property
    def sets(self) -> int:
        return 2 if self.mode == "forward-async" else 1


@dataclass
class StepHandle:
    """A launched step. `GraphRunner.tokens(handle)` returns its sampled tokens (waiting for them if needed)."""

    index: int
    size: int
    static_index: int
    host_copy_s: float  # host time spent working in launch(): staging writes and enqueueing
    host_wait_s: float  # host time launch() spent blocked on guards (the previous set's tokens, its copy)
    tokens: np.ndarray | None = None
    device_start_ms: float | None = None
    device_end_ms: float | None = None


@dataclass
class _Streams:
    compute: Any
    copy: Any
    fetch: Any


@dataclass
class StepMetrics:
    """Per-step figures for the caller and the benchmark."""

    device_ms: list[float] = field(default_factory=list)  # replay time per step, from device events
    device_gap_ms: list[float] = field(default_factory=list)  # device idle between replay N-1 and N (bubble)
    host_copy_ms: list[float] = field(default_factory=list)
    host_wait_ms: list[float] = field(default_factory=list)


class _EagerStep:
    """Stands for a captured graph in eager mode: `replay()` runs the step body on the current stream."""

    def __init__(self, body: Callable[[], None], device: GraphDevice) -> None:
        self.body, self.device = body, device
        self.outputs: tuple[Any, ...] = ()

    def replay(self) -> None:
        if self.device.kind == "cpu":
            self.device.current_stream().submit(self.body)  # type: ignore[attr-defined]  # the CPU stream's queue
        else:
            self.body()  # kernels go to the current (compute) stream


class GraphRunner:
    """Drives decode steps on graphs captured per (capture size, static set)."""

    def __init__(
        self,
        step: StepFn,
        fields: Sequence[Field],
        max_batch: int,
        device: GraphDevice,
        config: RunnerConfig,
    ) -> None:
        if config.capture_sizes[-1] > max_batch:
            raise ValueError(f"runner: capture size {config.capture_sizes[-1]} exceeds max_batch={max_batch}")
        names = [f.name for f in fields]
        if clash := set(names) & set(TOKEN_FIELDS):
            raise ValueError(f"runner: fields {sorted(clash)} are reserved; the runner adds {TOKEN_FIELDS} itself")
        self.step_fn, self.device, self.config, self.max_batch = step, device, config, max_batch
        self.fields = (Field("token_ids"), Field("prev_rows", pad=-1), *fields)
        # The staging protocol (staging.py): the host rewrites a staging set only after the copy out of it ran
        # (hazard 1; `guard_staging` off only in the test that shows the hazard); a static set is rewritten by the
        # copy stream only after its last replay (hazard 3, a stream wait in launch()).
        staging_guard = (lambda staged: staged.copied) if config.guard_staging else None
        staging_sets = config.staging_sets or config.sets
        self.staging = SetRing((StagingSet(self.fields, max_batch, device) for _ in range(staging_sets)), staging_guard)
        self.static = SetRing(StaticSet(self.fields, max_batch, device) for _ in range(config.sets))
        compute = device.new_stream()
        if config.mode == "sync":
            self.streams = _Streams(compute, compute, compute)
        elif config.mode == "scheduler-async":
            self.streams = _Streams(compute, compute, device.new_stream())
        else:
            self.streams = _Streams(compute, device.new_stream(), device.new_stream())
        self.graphs: dict[tuple[int, int], Any] = {}
        self.metrics = StepMetrics()
        self._origin = device.new_event(timing=True)
        self._pending: list[StepHandle | None] = [None] * config.sets
        self._last_end_ms: float | None = None
        self._steps = 0
        self._logged: set[str] = set()

    # --- capture -------------------------------------------------------------------------------------------
    def _body(self, size: int, index: int) -> Callable[[], None]:
        """What one graph does: feed back the previous step's tokens, run the model, sample greedily."""
        static = self.static[index]
        previous = self.static[(index - 1) % len(self.static)]

        def body() -> None:
            inputs = {name: tensor[:size] for name, tensor in static.tensors.items()}
            prev_rows = inputs.pop("prev_rows")
            fed = previous.sampled[prev_rows.clamp(min=0)]
            inputs["token_ids"] = torch.where(prev_rows >= 0, fed, inputs["token_ids"])
            logits = self.step_fn(inputs)
            static.sampled[:size].copy_(logits.argmax(dim=-1))

        return body

    def capture(self) -> None:
        """One graph per (size, static set), largest first, into one pool (or one per set), each after warm-up on
        the compute stream, through the project's one capture step (`capture.capture_graph`)."""
        # The static sets were filled on the caller's stream: the compute stream must not read them before.
        self.device.synchronize()
        if self.config.eager:
            for size in self.config.capture_sizes:
                for index in range(len(self.static)):
                    self.graphs[(size, index)] = _EagerStep(self._body(size, index), self.device)
            self._origin.record(self.streams.compute)
            self.device.synchronize()
            return
        pools = [self.device.graph_pool()]
        if self.config.pool_per_set:
            pools += [self.device.graph_pool() for _ in self.static[1:]]
        with torch.inference_mode(), self.device.use_stream(self.streams.compute):
            for size in sorted(self.config.capture_sizes, reverse=True):
                for index in range(len(self.static)):
                    pool = pools[index % len(pools)]
                    body = self._body(size, index)
                    for _ in range(self.config.warmup_iters):
                        body()
                    self.device.synchronize()
                    self.graphs[(size, index)] = capture_graph(body, (), size, self.device, pool).graph
            self._origin.record(self.streams.compute)
        self.device.synchronize()

    # --- stepping ------------------------------------------------------------------------------------------
    def _h2d(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        if self.config.debug and not self.device.is_pinned(src):
            raise SilentSyncError(
                f"non_blocking host-to-device copy from unpinned memory (it would run synchronously) at "
                f"{caller_line()}; write into the runner's pinned staging set instead"
            )
        self.device.copy_(dst, src)

    def launch(self, batch: dict[str, np.ndarray]) -> StepHandle:
        """Enqueue one step. `batch` holds one array per field (token_ids, prev_rows and the model's fields),
        each with the batch size as its first dimension. Returns at once in the async modes."""
        start = time.perf_counter()
        size = len(batch["prev_rows"])
        bucket = GraphSignature.bucket_for(size, self.config.capture_sizes)
        if bucket is None:
            raise ValueError(
                f"runner: batch of {size} rows is above the largest capture size {self.config.capture_sizes[-1]}; "
                "raise capture_sizes (and max_batch) or schedule fewer rows per step"
            )
        index, static = self.static.next_set()
        wait_start = time.perf_counter()
        self._collect_pending(index)  # the host buffer of this set is about to be refilled
        _, staging = self.staging.next_set()  # hazard 1: waits until the last copy out of this staging set has run
        waited = time.perf_counter() - wait_start
        if self.config.poison:
            staging.poison()
        staging.write(batch, size)
        streams = self.streams
        caller = self.device.current_stream()
        with self.device.use_stream(streams.copy):
            # Work the caller queued before this step (a prefill's KV writes, a cache reset) comes first.
            streams.copy.wait_stream(caller)
            streams.copy.wait_event(static.replayed)  # hazard 3: no replay still reads this static set
            for name, tensor in static.tensors.items():
                self._h2d(tensor[:size], staging.tensors[name][:size])
                if size < bucket:
                    self.device.fill_(tensor[size:bucket], static.pads[name])
            staging.copied.record(streams.copy)
        with self.device.use_stream(streams.compute):
            streams.compute.wait_event(staging.copied)
            streams.compute.wait_event(static.fetched)  # the tokens of this set's last step have left
            static.replay_start.record(streams.compute)
            self.graphs[(bucket, index)].replay()
            static.replay_end.record(streams.compute)
            static.replayed.record(streams.compute)
        with self.device.use_stream(streams.fetch):
            streams.fetch.wait_event(static.replayed)
            self.device.copy_(static.host_tokens[:size], static.sampled[:size])
            static.fetched.record(streams.fetch)
        bump(Count.REPLAYS)
        handle = StepHandle(self._steps, size, index, time.perf_counter() - start - waited, waited)
        self._pending[index] = handle
        self._steps += 1
        self.static.advance()
        self.staging.advance()
        return handle

    def _collect_pending(self, index: int) -> None:
        handle = self._pending[index]
        if handle is not None and handle.tokens is None:
            self.tokens(handle)

    def tokens(self, handle: StepHandle) -> np.ndarray:
        """The sampled tokens of a launched step; waits for its fetch event the first time."""
        if handle.tokens is not None:
            return handle.tokens
        static = self.static[handle.static_index]
        if self._pending[handle.static_index] is not handle:
            raise RuntimeError(f"runner: tokens of step {handle.index} were overwritten before being read")
        static.fetched.synchronize()
        handle.tokens = static.host_tokens[: handle.size].numpy().copy()
        handle.device_start_ms = self._origin.elapsed_time(static.replay_start)
        handle.device_end_ms = self._origin.elapsed_time(static.replay_end)
        self._record_metrics(handle)
        if self.config.poison:
            static.host_tokens.fill_(POISON)
        return handle.tokens

    def _record_metrics(self, handle: StepHandle) -> None:
        assert handle.device_start_ms is not None and handle.device_end_ms is not None
        self.metrics.device_ms.append(handle.device_end_ms - handle.device_start_ms)
        self.metrics.host_copy_ms.append(handle.host_copy_s * 1e3)
        self.metrics.host_wait_ms.append(handle.host_wait_s * 1e3)
        if self._last_end_ms is not None:
            self.metrics.device_gap_ms.append(max(0.0, handle.device_start_ms - self._last_end_ms))
        self._last_end_ms = handle.device_end_ms

    def device_storages(self) -> set[int]:
        """Data pointers of the runner's device-side storages (for the silent-sync detector on the CPU lane)."""
        tensors = [t for s in self.static for t in (*s.tensors.values(), s.sampled)]
        return {t.untyped_storage().data_ptr() for t in tensors}

    def detect_silent_syncs(self) -> SilentSyncDetector:
        """A context manager for the host thread's step loop: raises SilentSyncError at a silent sync."""
        return SilentSyncDetector(self.device_storages(), self.device.is_pinned)

    def finish(self) -> None:
        """Read every outstanding step's tokens and wait for the device."""
        for handle in self._pending:
            if handle is not None and handle.tokens is None:
                self.tokens(handle)
        self.device.synchronize()
