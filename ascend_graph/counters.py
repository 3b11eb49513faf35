"""Process-wide counters that prove graph mode really ran.

`ascend_graph.counters()` returns a snapshot; tests and users read it (inside vLLM workers through
`LLM.collective_rpc`). A single lock-protected instance is the one piece of module state we keep on purpose:
counters must be visible from anywhere in the process without threading an object through dynamo.
"""

from __future__ import annotations

import threading
from collections import Counter

# The keys that always exist, so that `counters()["replays"]` never raises.
COUNTER_KEYS = (
    "compiles",
    "captures",
    "replays",
    "eager_fallbacks",
    "eager_calls",
    "capture_failures",
    "verified_sizes",
    "verify_mismatches",
    "verify_errors",
    "replay_failures",
)


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._values[key] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            values = {key: 0 for key in COUNTER_KEYS}
            values.update(self._values)
            return values

    def reset(self) -> None:
        with self._lock:
            self._values.clear()


_COUNTERS = _Counters()


def bump(key: str, amount: int = 1) -> None:
    """Add `amount` to counter `key`."""
    _COUNTERS.add(key, amount)


def counters() -> dict[str, int]:
    """A snapshot of the counters: compiles, captures, replays, eager_fallbacks (graphs that gave up on graph
    mode), eager_calls (calls served eagerly, e.g. sizes above the largest capture size), capture_failures (sizes whose
    warm-up or capture raised and run eagerly), verified_sizes / verify_mismatches / verify_errors (the shadow-eager
    verifier: sizes checked, sizes that disagreed, sizes it could not check), replay_failures (replays that raised;
    the call ran eagerly), and others."""
    return _COUNTERS.snapshot()


def reset_counters() -> None:
    """Set every counter back to zero."""
    _COUNTERS.reset()
