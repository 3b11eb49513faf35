"""What one compiled graph did, as plain data: the body of `GraphCompiled.report()` (backend.py).

A JSON-ready dict: captured sizes, graph memory per size, passes applied, sizes served eagerly and why, the
verifier's results. `ascend_graph.inspect()` (inspection.py) gathers them for a whole model.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def _passes(piece: Any) -> list[str] | str:
    """The passes applied: what the graph records (`passes_applied`), else the config's `passes` field, else
    "none" (the passes feature may not be in this build)."""
    applied = getattr(piece, "passes_applied", None)
    if applied is None:
        applied = getattr(piece.config, "passes", None)
    if not applied:
        return "none"
    if isinstance(applied, str):
        return [applied]
    return [getattr(item, "__name__", str(item)) for item in applied]


def graph_report(piece: Any) -> dict[str, Any]:
    """The report of one GraphCompiled (see `GraphCompiled.report`; typed loosely, so that this view does not
    import the backend it describes)."""
    captured = [
        {
            "size": capture.size,
            "capture_s": round(capture.capture_seconds, 6),
            "pool_bytes": capture.pool_bytes,
            "static_bytes": capture.static_bytes,
            "graph_bytes": capture.graph_bytes,
        }
        for capture in sorted(piece.captures.values(), key=lambda c: -1 if c.size is None else c.size)
    ]
    kinds = Counter(spec.kind.value for spec in piece.signature.inputs)
    return {
        "device": piece.device.kind,
        "lowering": piece.lowering,
        "output_mode": piece.config.output_mode,
        "capture_sizes": list(piece.config.capture_sizes),
        "sizes": list(piece.sizes),  # the capture sizes dynamo's guards allow for this graph
        "batch_dimension": piece.signature.batch_where,  # the bucketed symbol and where it is, or why none
        "pinned": {str(symbol): value for symbol, value in piece.signature.pinned.items()},
        "graph_fallback": piece.fallback_reason,  # why the whole graph runs eagerly, or None
        "captured": captured,
        "memory_bytes": {
            "pool": sum(row["pool_bytes"] for row in captured),
            "static": sum(row["static_bytes"] for row in captured),
        },
        "fallbacks": [fallback.as_dict() for _, fallback in sorted(piece.size_fallbacks.items(), key=_size_key)],
        "verify": {
            "enabled": piece.config.verify,
            "results": [result.as_dict() for result in piece.verify_results],
        },
        "passes": _passes(piece),
        "inputs": dict(sorted(kinds.items())),
    }


def _size_key(item: tuple[int | None, Any]) -> int:
    return -1 if item[0] is None else item[0]
