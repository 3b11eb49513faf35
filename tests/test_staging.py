"""The staging protocol's ring (staging.py): sets in turn, and the host waits for a set's last reader when guarded."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ascend_graph.device.cpu import CPU_DEVICE, CpuEvent
from ascend_graph.staging import SetRing


@dataclass
class _Set:
    name: str
    read: CpuEvent = field(default_factory=CpuEvent)


def test_sets_are_used_in_turn_and_only_advance_when_told() -> None:
    ring = SetRing([_Set("a"), _Set("b")])
    names = []
    for _ in range(5):
        names.append(ring.next_set()[1].name)
        assert ring.next_set()[1].name == names[-1]  # asking again names the same set
        ring.advance()
    assert names == ["a", "b", "a", "b", "a"]
    assert [s.name for s in ring] == ["a", "b"] and len(ring) == 2 and ring[1].name == "b"


def test_a_guarded_set_is_handed_out_only_after_its_last_reader_finished() -> None:
    release = threading.Event()
    stream = CPU_DEVICE.new_stream()
    first, second = _Set("a"), _Set("b")
    stream.submit(release.wait)  # a reader of set a that has not finished yet
    first.read.record(stream)
    handed: list[str] = []

    def take() -> None:
        handed.append(guarded.next_set()[1].name)

    unguarded = SetRing([first, second])
    assert unguarded.next_set()[1] is first and not first.read.query()  # no guard: handed out while still read
    guarded = SetRing([first, second], guard=lambda s: s.read)
    taker = threading.Thread(target=take)
    taker.start()
    taker.join(timeout=0.3)
    assert taker.is_alive() and handed == []  # waiting for the reader
    release.set()
    taker.join(timeout=10)
    assert handed == ["a"] and first.read.query()
