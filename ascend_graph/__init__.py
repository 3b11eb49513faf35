"""ascend_graph: graph-mode compiler backend and graph-replay runner for vLLM (Ascend NPU, CUDA, CPU).

`torch.compile(model, backend="ascend_graph", dynamic=True, options={"capture_sizes": [1, 2, 4, 8]})`
"""

from __future__ import annotations

import os as _os

# passes/ and kernels/ live at the top of the repository and are installed as ascend_graph.passes / .kernels
# (setuptools package-dir). Run from a source tree that is not installed (PYTHONPATH=checkout, as on the device
# machine), the package looks for them beside itself; an installed copy has them inside and skips this.
_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "passes")) and _os.path.isfile(
    _os.path.join(_ROOT, "passes", "__init__.py")
):
    __path__.append(_ROOT)

from .backend import GraphCompiled, ascend_graph_backend  # noqa: E402
from .config import GraphConfig  # noqa: E402
from .counters import counters, reset_counters  # noqa: E402
from .device import available_kinds, get_device  # noqa: E402
from .inspection import inspect  # noqa: E402


def _register_dynamo_backend() -> None:
    """`backend="ascend_graph"` also when the package runs uninstalled (the entry point registers it otherwise)."""
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
