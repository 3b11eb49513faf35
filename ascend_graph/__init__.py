"""ascend_graph: graph-mode compiler backend and graph-replay runner for vLLM (Ascend NPU, CUDA, CPU).

`torch.compile(model, backend="ascend_graph", dynamic=True, options={"capture_sizes": [1, 2, 4, 8]})`
"""

from __future__ import annotations

from .backend import GraphCompiled, ascend_graph_backend
from .config import GraphConfig
from .counters import counters, reset_counters
from .device import available_kinds, get_device
from .report import inspect

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
