"""The staging protocol of every engine: input sets used in turn, each rewritten only after its last reader finished.

A step writes its inputs into one set while the device may still be running the previous step from another; the
step after next comes back to the first set. Before the host rewrites a set, the event recorded after the last work
that read it must have fired (hazards 1 and 3 of docs/design.md). Where the host itself writes the set, the host
waits for that event here; where only the device does, the engine makes its stream wait instead and the ring has no
guard.

Who uses it:
- the standalone runner (runner/runner.py): pinned staging sets, guarded on the host by the event after their
  host-to-device copy; static sets, guarded on the copy stream by the event after their last replay;
- the CPU lane inside vLLM (vllm_plugin/model_runner.py): the sets the job reads (copies of vLLM's buffers),
  guarded on the host by the event after the job;
- the GPU lane and Ascend inside vLLM (vllm_plugin/gpu_runner.py, npu_runner.py): vLLM's input buffers, one per set;
  on CUDA the stream orders the kernels that write them, on Ascend the attention-parameter update waits for the
  set's last replay (npu_runner.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from .device import Event

T = TypeVar("T")


class SetRing(Generic[T]):
    """`sets` used in turn: `next_set()` names the set of this step, `advance()` moves on once the step is queued."""

    def __init__(self, sets: Iterable[T], guard: Callable[[T], Event | None] | None = None) -> None:
        self.sets = list(sets)
        self.guard = guard  # the event of a set's last reader, where the host writes the set
        self.turn = 0

    def next_set(self) -> tuple[int, T]:
        """This step's set and its index, after the host waited for the guard event of the set (if any)."""
        index = self.turn % len(self.sets)
        chosen = self.sets[index]
        event = self.guard(chosen) if self.guard is not None else None
        if event is not None:
            event.synchronize()
        return index, chosen

    def advance(self) -> None:
        self.turn += 1

    def __len__(self) -> int:
        return len(self.sets)

    def __getitem__(self, index: int) -> T:
        return self.sets[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self.sets)
