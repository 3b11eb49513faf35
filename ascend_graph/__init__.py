"""ascend_graph: graph-mode compiler backend and graph-replay runner for vLLM (Ascend NPU, CUDA, CPU).

`torch.compile(model, backend="ascend_graph", dynamic=True, options={"capture_sizes": [1, 2, 4, 8]})`
"""

from __future__ import annotations

from .backend import GraphCompiled, ascend_graph_backend
from .config import GraphConfig
from .counters import counters, reset_counters
from .device import available_kinds, get_device
from .inspection import inspect


def _register_dynamo_backend() -> None:
    """`backend="ascend_graph"` as soon as the package is imported, whether or not torch has read its entry point."""
    import torch._dynamo

    if "ascend_graph" not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(ascend_graph_backend, name="ascend_graph")


_register_dynamo_backend()

__version__ = "0.1.0"

__all__ = [
    "GraphCompiled",
    "GraphConfig",
    "__version__",
    "ascend_graph_backend",
    "available_kinds",
    "counters",
    "get_device",
    "inspect",
    "reset_counters",
]
