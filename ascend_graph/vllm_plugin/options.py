"""The `ascend_graph` section of vLLM's `--additional-config`, validated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALLOWED = {
    "mode": ("sync", "forward-async"),
    "lowering": ("inductor", "aten", "host"),
    "debug": (True, False),
    "passes": None,  # check_pass_names
    "graph_runner": ("ascend_graph", "vllm"),
    "verify": (True, False),
    "decode_steps": None,  # check_decode_steps
}


def platform_attribute(platform: Any, name: str, default: Any) -> Any:
    """`name` of the active vLLM platform, or `default` when its class has none. Read from the class: vLLM's
    `Platform.__getattr__` answers a missing instance attribute with None and a warning ("Current platform cpu
    does not have '...' attribute"), never with the default a plain getattr asks for."""
    return getattr(type(platform), name, default)


def default_lowering(platform: Any) -> str:
    """The lowering used when the user names none: the platform's `ascend_graph_default_lowering` ("host" on
    Ascend), else "inductor"."""
    return platform_attribute(platform, "ascend_graph_default_lowering", "inductor")


def parse_additional_config(
    additional_config: Mapping[str, Any] | None, default_lowering: str = "inductor"
) -> dict[str, Any]:
    """`{"ascend_graph": {...}}` -> its options with defaults; unknown keys or values raise a ValueError naming
    the allowed ones. mode "sync": the graphs replay in vLLM's own step order; "forward-async": the host prepares
    step N+1 while step N runs (vLLM's async scheduling plus double-buffered static inputs, model_runner.py).
    `lowering`: what runs inside each captured piece, "inductor" (vLLM's inductor adaptor; the default on CPU and
    CUDA), "aten" (the traced ops) or "host" (the host platform's own compiler: vLLM's inductor on CPU and CUDA,
    vllm-ascend's on Ascend, where it is the default: `default_lowering`).
    `passes` names ascend_graph fusion passes to run on every piece vLLM compiles (or "all"); default none.
    `graph_runner` (CUDA): "ascend_graph" (default) captures and replays with ascend_graph's own wrapper, capture
    step and static sets; "vllm" keeps vLLM's CUDAGraphWrapper and runner (ascend_graph only compiles), the
    baseline. `verify` (or ASCEND_GRAPH_VERIFY=1): every graph ascend_graph captures is replayed once against the
    same computation run eagerly; one that disagrees runs eagerly, logged (`verify_requested`).
    `decode_steps` (default 1): when every request of a batch decodes, run that many decode steps per host round
    trip (CPU lane, mode "sync"; vllm_plugin/multistep.py)."""
    section = dict((additional_config or {}).get("ascend_graph") or {})
    unknown = sorted(set(section) - set(ALLOWED))
    if unknown:
        raise ValueError(
            f"additional_config.ascend_graph: unknown key(s) {unknown}; allowed keys are {sorted(ALLOWED)}"
        )
    if "passes" in section:
        from ascend_graph.passes import PASS_NAMES, check_pass_names

        passes = PASS_NAMES if section["passes"] == "all" else section["passes"]
        section["passes"] = check_pass_names(passes, where="additional_config.ascend_graph.passes")
    if "decode_steps" in section:
        check_decode_steps(section["decode_steps"])
    for key, value in section.items():
        if ALLOWED[key] is not None and value not in ALLOWED[key]:
            raise ValueError(
                f"additional_config.ascend_graph.{key}={value!r} is not allowed; allowed values are {ALLOWED[key]}"
            )
    defaults = {
        "mode": "sync",
        "lowering": default_lowering,
        "debug": False,
        "passes": (),
        "graph_runner": "ascend_graph",
        "verify": False,
        "decode_steps": 1,
    }
    return {**defaults, **section}


def check_decode_steps(value: Any) -> int:
    """`decode_steps`: decode steps run back to back per host round trip (vllm_plugin/multistep.py), an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"additional_config.ascend_graph.decode_steps={value!r} is not allowed; allowed values are integers >= 1"
        )
    return value


def verify_requested(options: Mapping[str, Any]) -> bool:
    """`verify` in the options or ASCEND_GRAPH_VERIFY=1 in the environment (as for the standalone backend)."""
    from ascend_graph.config import env_flags

    return bool(options.get("verify")) or env_flags()["verify"]
