"""Process-wide counters that prove graph mode really ran.

`ascend_graph.counters()` returns a snapshot (every counter, zero included); tests and users read it (inside vLLM
workers through `LLM.collective_rpc`). The code counts through `bump(Count.X)`: the names are one enum, so a typo
is an AttributeError where it is written, not a new counter nobody reads. A single instance is the one piece of
module state kept on purpose: counters must be visible from anywhere in the process without threading an object
through dynamo. Counting takes no lock (it is on every replay): each thread adds to its own tally, which only it
writes; a snapshot sums the tallies.
"""

from __future__ import annotations

import enum
import threading


class Count(str, enum.Enum):
    """Every counter, with what one unit of it is."""

    COMPILES = "compiles"  # graphs the dynamo backend compiled (one GraphCompiled each)
    PIECE_COMPILES = "piece_compiles"  # pieces vLLM handed to ascend_graph's compiler (vllm_plugin/compiler.py)
    PIECE_LOADS = "piece_loads"  # pieces loaded from vLLM's compile cache instead
    FUSED_OPS = "fused_ops"  # ops the fusion passes replaced
    CAPTURES = "captures"  # graphs captured (one per size, static input set or piece)
    STARTUP_CAPTURES = "startup_captures"  # of those, captured while vLLM's start-up capture ran (CPU lane)
    GRAPH_WRAPPERS = "graph_wrappers"  # static graph wrappers vLLM built (one per piece, or the whole model)
    REPLAYS = "replays"  # graph replays
    EAGER_FALLBACKS = "eager_fallbacks"  # whole graphs that gave up on graph mode
    EAGER_CALLS = "eager_calls"  # calls served eagerly (a size above the largest capture size, a failed size)
    CAPTURE_FAILURES = "capture_failures"  # sizes whose warm-up or capture raised (served eagerly after)
    VERIFIED_SIZES = "verified_sizes"  # captures the verifier checked against eager and found equal
    VERIFY_MISMATCHES = "verify_mismatches"  # captures that disagreed with eager (served eagerly after)
    VERIFY_ERRORS = "verify_errors"  # captures the verifier could not check
    REPLAY_FAILURES = "replay_failures"  # replays that raised (the call ran eagerly)
    VLLM_ASYNC_STEPS = "vllm_async_steps"  # CPU lane forward-async: steps launched ahead of the host
    VLLM_SYNC_STEPS = "vllm_sync_steps"  # CPU lane forward-async: steps that needed host state, run sync
    BURSTS = "bursts"  # decode_steps > 1: bursts of decode steps run per host round trip (vllm_plugin/multistep.py)
    BURST_STEPS = "burst_steps"  # decode steps run inside bursts (tokens per request; / bursts = steps per burst)
    BURSTS_CUT_SHORT = "bursts_cut_short"  # bursts shorter than decode_steps (max_tokens, max_model_len, all stopped)
    BURST_SINGLE_STEPS = "burst_single_steps"  # steps run with K = 1 while decode_steps > 1 (prefill, waiting, ...)
    BURST_HOST_US = "burst_host_us"  # inside bursts: host time (input prep, bookkeeping), microseconds
    BURST_DEVICE_US = "burst_device_us"  # inside bursts: device time (forward and sampling jobs), microseconds


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the list of tallies, taken once per thread, never per count
        self._tallies: list[dict[Count, int]] = []
        self._local = threading.local()

    def _tally(self) -> dict[Count, int]:
        tally = getattr(self._local, "tally", None)
        if tally is None:
            tally = self._local.tally = dict.fromkeys(Count, 0)  # every key present: a snapshot never sees it grow
            with self._lock:
                self._tallies.append(tally)
        return tally

    def add(self, key: Count, amount: int = 1) -> None:
        self._tally()[key] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            tallies = list(self._tallies)
        return {key.value: sum(tally[key] for tally in tallies) for key in Count}

    def reset(self) -> None:
        with self._lock:
            for tally in self._tallies:
                for key in tally:
                    tally[key] = 0


_COUNTERS = _Counters()


def bump(key: Count, amount: int = 1) -> None:
    """Add `amount` to counter `key`."""
    # the code passes members (a cheap check on the per-replay path); a plain string is looked up, and refused
    # if it names no counter
    _COUNTERS.add(key if isinstance(key, Count) else Count(key), amount)


def counters() -> dict[str, int]:
    """A snapshot of every counter by name (`Count` says what each counts), zeros included."""
    return _COUNTERS.snapshot()


def reset_counters() -> None:
    """Set every counter back to zero."""
    _COUNTERS.reset()
