"""Process set-up for tensor-parallel decoding: process groups, NVLink multicast off, a watchdog, local spawning.

- `init_tensor_parallel()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
  turns NVLink multicast off before NCCL exists, and opens two groups: the model's (NCCL on CUDA, gloo on the CPU),
  whose all-reduces run inside the decoder and inside captured graphs, and a gloo "control" group for the host's
  own agreement checks, so the host never puts a collective on the model's communicator while a graph replays.
  Both get one collective at once: NCCL creates its communicator lazily, and creating it inside a CUDA graph
  capture is not allowed (PyTorch's own test of all-reduce in a CUDA graph does one eager all-reduce first;
  `device_id` also asks for the communicator at init).
- `Watchdog` turns a hang into a failure: each phase has a time budget; past it the process prints which phase of
  which rank hung, dumps every thread's stack and exits with `EXIT_HANG`. torchrun then stops the other ranks,
  and `spawn()` does the same for local runs. Collectives captured in a graph are invisible to NCCL's own
  watchdog, so this one is needed.
- `spawn()` runs a function on N local processes with gloo (free port on 127.0.0.1): the CPU tests' torchrun.
"""

from __future__ import annotations

import contextlib
import datetime
import faulthandler
import multiprocessing
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# The device tool's KINDS.md: NVLink multicast can take the host's shared GPUs out of service. Also inherited by
# every child process, since they are set in os.environ before anything starts.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
EXIT_HANG = 3
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def multicast_off() -> dict[str, str]:
    """Set the variables that keep NVLink multicast off (NCCL, torch symmetric memory, NVSHMEM)."""
    os.environ.update(MULTICAST_OFF)
    return {name: os.environ[name] for name in MULTICAST_OFF}


@dataclass
class TensorParallelContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    group_name: str  # the model's group, for the functional all-reduce
    control: Any  # gloo group for host-side agreement

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), in rank order, through the control group."""
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.control)
        return gathered


def init_tensor_parallel(device_kind: str, timeout_s: float = 120.0) -> TensorParallelContext:
    """Join the process group torchrun (or `spawn`) described in the environment; see the module docstring."""
    multicast_off()
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"tensor parallel: environment variables {missing} are not set; start with torchrun")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    timeout = datetime.timedelta(seconds=timeout_s)
    if device_kind == "cuda":
        if torch.cuda.device_count() <= local_rank:
            raise RuntimeError(f"tensor parallel: LOCAL_RANK={local_rank} but {torch.cuda.device_count()} GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, timeout=timeout, device_id=device)
    elif device_kind == "cpu":
        device = torch.device("cpu")
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout)
    else:
        raise ValueError(f"tensor parallel: device {device_kind!r} is not supported; allowed: 'cuda', 'cpu'")
    control = dist.new_group(backend="gloo", timeout=timeout)
    context = TensorParallelContext(
        rank, world_size, local_rank, device, dist.get_backend(), dist.group.WORLD.group_name, control
    )
    warm = torch.ones(1, device=device)
    dist.all_reduce(warm)  # creates the model group's communicator now, outside any graph capture
    if device.type == "cuda":
        torch.cuda.synchronize()
    if warm.item() != world_size:
        raise RuntimeError(f"tensor parallel: warm-up all-reduce gave {warm.item()}, expected {world_size}")
    context.gather(rank)
    return context


class Watchdog:
    """Per-phase time budgets on a daemon thread; see the module docstring."""

    def __init__(self, rank: int, poll_s: float = 0.1) -> None:
        self.rank = rank
        self._phase: tuple[str, float, float] | None = None  # name, budget, deadline
        self._lock = threading.Lock()
        self._poll_s = poll_s
        threading.Thread(target=self._watch, name="tp-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def phase(self, name: str, budget_s: float) -> Iterator[None]:
        with self._lock:
            outer, self._phase = self._phase, (name, budget_s, time.monotonic() + budget_s)
        try:
            yield
        finally:
            with self._lock:
                self._phase = outer

    def _watch(self) -> None:
        while True:
            time.sleep(self._poll_s)
            with self._lock:
                phase = self._phase
            if phase is not None and time.monotonic() > phase[2]:
                name, budget, _ = phase
                print(
                    f"HANG: rank {self.rank}: phase {name!r} exceeded its {budget:.0f} s budget "
                    "(a collective another rank never joined, or a stuck device); stacks follow",
                    file=sys.stderr,
                    flush=True,
                )
                faulthandler.dump_traceback(all_threads=True)
                os._exit(EXIT_HANG)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        ASCEND_GRAPH_SPAWNED="1",
    )
    try:
        out.put((rank, True, fn(*args)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        out.put((rank, False, traceback.format_exc()))
        sys.exit(1)


def _stopped_without_result(processes: list[Any], results: dict[int, Any]) -> str | None:
    dead = [(rank, p.exitcode) for rank, p in enumerate(processes) if p.exitcode not in (None, 0)]
    dead = [(rank, code) for rank, code in dead if rank not in results]
    if not dead:
        return None
    hung = [rank for rank, code in dead if code == EXIT_HANG]
    watchdog = f"; ranks {hung} hit the watchdog (a phase exceeded its budget, see stderr)" if hung else ""
    return f"tensor-parallel worker(s) died without a result: (rank, exit code) {dead}{watchdog}"


def spawn(fn: Callable[..., Any], world_size: int, args: tuple[Any, ...] = (), timeout_s: float = 120.0) -> list[Any]:
    """Run `fn(*args)` on `world_size` fresh processes (torchrun's variables set) and return their results in
    rank order. The first failure, or the deadline, stops every process and raises with the reason."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    port = free_port()
    processes = [
        context.Process(target=_spawned, args=(rank, world_size, port, fn, args, out), daemon=True)
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < world_size:
            # A worker that died may still have its traceback in the queue: read it before blaming the exit code.
            stopped = _stopped_without_result(processes, results)
            try:
                rank, ok, value = out.get(timeout=1.0 if stopped else 0.2)
            except queue.Empty:
                stopped = stopped or _stopped_without_result(processes, results)
                running = [rank for rank in range(world_size) if rank not in results]
                if stopped is None and time.monotonic() > deadline:
                    stopped = f"tensor-parallel workers {running} did not finish within {timeout_s:.0f} s"
                if stopped is not None:
                    raise RuntimeError(stopped) from None
                continue
            if not ok:
                raise RuntimeError(f"tensor-parallel worker rank {rank} failed:\n{value}")
            results[rank] = value
        for process in processes:  # results are in: a worker still tearing down is ended below
            process.join(timeout=min(10.0, max(1.0, deadline - time.monotonic())))
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    return [results[rank] for rank in range(world_size)]
