"""Lowering: what a captured piece runs.

- "aten": the FX graph as dynamo traced it; its ops dispatch to ATen kernels one by one and are captured as
  they are.
- "inductor": compiled by inductor first (Triton kernels on CUDA, C++ on CPU), with inductor's own CUDA graphs
  off, since ascend_graph captures.
- "torchair": compiled by torchair's NPU backend (GE graph), then captured. UNVERIFIED: no NPU in reach.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch.fx

logger = logging.getLogger(__name__)

AUTO_LOWERING = {"cpu": "aten", "cuda": "inductor", "npu": "torchair"}
LOWERINGS_BY_DEVICE = {"cpu": ("aten", "inductor"), "cuda": ("aten", "inductor"), "npu": ("aten", "torchair")}


def resolve_lowering(requested: str, device_kind: str) -> str:
    """The lowering to use; "auto" picks the best per device. Raises ValueError for impossible pairs."""
    if requested == "auto":
        return AUTO_LOWERING[device_kind]
    allowed = LOWERINGS_BY_DEVICE[device_kind]
    if requested not in allowed:
        raise ValueError(
            f"ascend_graph config: lowering={requested!r} is not available on device {device_kind!r}; "
            f"allowed there: {allowed} or 'auto'"
        )
    return requested


def _inductor(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, list(example_inputs), config_patches={"triton.cudagraphs": False})


def _torchair(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    import torch_npu  # noqa: F401
    import torchair

    config = torchair.CompilerConfig()
    config.mode = "max-autotune"  # GE graph compile; the ACL graph capture is ours
    return torchair.get_npu_backend(compiler_config=config)(gm, list(example_inputs))


def lower(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], lowering: str) -> Callable[..., Any]:
    """A callable with the graph's calling convention (`fn(*inputs)`) running the chosen lowering."""
    if lowering == "aten":
        return gm.forward
    if lowering == "inductor":
        return _inductor(gm, example_inputs)
    return _torchair(gm, example_inputs)
