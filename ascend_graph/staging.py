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
- Ascend inside vLLM (vllm_plugin/npu_runner.py): vllm-ascend's input buffers, one per set; the attention-parameter
  update waits for the set's last replay. (CUDA inside vLLM has one set: the device orders every write of it.)

Graphs bound to a set are keyed by the set's label, which the engine names for the duration of a step or a capture
(`using_static_set`) and graph wrappers read (`static_set_in_use`): a context variable, so that it costs one lookup
per replay and follows the work onto the thread that runs it. Label 0 is the host's own buffers.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from .device import Event

T = TypeVar("T")

# Context-local, not module state: each thread (the CPU stream's executor included) sees its own, default 0.
_STATIC_SET: contextvars.ContextVar[int] = contextvars.ContextVar("ascend_graph_static_set", default=0)


def static_set_in_use() -> int:
    """The label of the static input set the current step or capture reads (0: the host's own buffers)."""
    return _STATIC_SET.get()


@contextlib.contextmanager
def using_static_set(label: int) -> Iterator[None]:
    """Graphs captured or replayed inside are those of static set `label`."""
    token = _STATIC_SET.set(label)
    try:
        yield
    finally:
        _STATIC_SET.reset(token)


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
