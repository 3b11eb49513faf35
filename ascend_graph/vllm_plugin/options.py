"""The `ascend_graph` section of vLLM's `--additional-config`, validated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALLOWED = {"mode": ("sync", "forward-async"), "debug": (True, False)}


def parse_additional_config(additional_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """`{"ascend_graph": {...}}` -> its options with defaults; unknown keys or values raise a ValueError naming
    the allowed ones. mode "sync": the graphs replay in vLLM's own step order; "forward-async": the host prepares
    step N+1 while step N runs (vLLM's async scheduling plus double-buffered static inputs, model_runner.py)."""
    section = dict((additional_config or {}).get("ascend_graph") or {})
    unknown = sorted(set(section) - set(ALLOWED))
    if unknown:
        raise ValueError(
            f"additional_config.ascend_graph: unknown key(s) {unknown}; allowed keys are {sorted(ALLOWED)}"
        )
    for key, value in section.items():
        if value not in ALLOWED[key]:
            raise ValueError(
                f"additional_config.ascend_graph.{key}={value!r} is not allowed; allowed values are {ALLOWED[key]}"
            )
    return {"mode": "sync", "debug": False, **section}
