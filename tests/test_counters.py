"""The counters: every name is declared once (`Count`), a misspelt name is refused, snapshots list every counter."""

from __future__ import annotations

import pytest

import ascend_graph
from ascend_graph.counters import Count, bump


def test_snapshot_lists_every_counter_and_bump_adds() -> None:
    ascend_graph.reset_counters()
    assert ascend_graph.counters() == {key.value: 0 for key in Count}
    bump(Count.REPLAYS)
    bump(Count.REPLAYS, 2)
    bump("captures")  # type: ignore[arg-type]  # a plain string naming a counter is accepted
    snapshot = ascend_graph.counters()
    assert snapshot["replays"] == 3 and snapshot["captures"] == 1
    assert sum(snapshot.values()) == 4
    ascend_graph.reset_counters()
    assert ascend_graph.counters()["replays"] == 0


def test_a_misspelt_counter_is_refused() -> None:
    with pytest.raises(ValueError, match="replay"):
        bump("replay")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        bump(Count.REPLAY)  # type: ignore[attr-defined]
