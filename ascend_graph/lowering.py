"""Lowering: what a captured piece runs.

- "aten": the FX graph as dynamo traced it; its ops dispatch to ATen kernels one by one and are captured as
  they are.
- "inductor": compiled by inductor first (Triton kernels on CUDA, C++ on CPU), with inductor's own CUDA graphs
  off, since ascend_graph captures.
- "npugraph_ex" (NPU, the default there): torch_npu's npugraph_ex compiler rewrites the graph (its fusion patterns,
  no-op removal) and runs it eagerly under ascend_graph's capture, configured as vllm-ascend's AscendCompiler
  configures it for FULL graphs (vllm_ascend/compilation/compiler_interface.py, `npugraph_ex_compile` and
  `_configure_backend`, in vllm-ascend 0.23.0; npugraph_ex replaced torchair there, vllm-ascend PR #9201).
- "torchair" (NPU, opt-in): what vllm-ascend falls back to where npugraph_ex does not import: torchair in
  "reduce-overhead" mode with `debug.run_eagerly`, again under ascend_graph's capture. torchair's GE graph mode
  ("max-autotune", the earlier default here) is not used: it hands the graph to GE, which runs it itself.
Both NPU lowerings are UNVERIFIED on hardware: the calls are checked against torch_npu 2.11.0's sources
(ascend_graph.conformance), no NPU is in reach.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch.fx

logger = logging.getLogger(__name__)

AUTO_LOWERING = {"cpu": "aten", "cuda": "inductor", "npu": "npugraph_ex"}
LOWERINGS_BY_DEVICE = {
    "cpu": ("aten", "inductor"),
    "cuda": ("aten", "inductor"),
    "npu": ("aten", "npugraph_ex", "torchair"),
}


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


def _returning_tuple(
    gm: torch.fx.GraphModule, example_inputs: Sequence[Any], backend: Callable[..., Any]
) -> Callable[..., Any]:
    """npugraph_ex and torchair compile through AOTAutograd, which wants a graph returning a tuple (vllm-ascend
    wraps its graphs the same way)."""
    from torch._inductor.compile_fx import graph_returns_tuple, make_graph_return_tuple

    if graph_returns_tuple(gm):
        return backend(gm, list(example_inputs))
    return make_graph_return_tuple(gm, list(example_inputs), backend)


def _npugraph_ex(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    # torch_npu first: importing it registers torch.npu and puts npugraph_ex into sys.modules.
    import torch_npu  # noqa: F401, I001
    import npugraph_ex

    torch.npu.set_compile_mode(jit_compile=False)  # prebuilt operator binaries, as vllm-ascend sets
    config = npugraph_ex.CompilerConfig()
    config.force_eager = True  # npugraph_ex optimises the FX graph and runs it eagerly: the capture is ours
    config.inplace_pass = False  # vllm-ascend: its re-inplacing sent gelu to the CPU
    config.clone_input = False  # the static inputs are ascend_graph's buffers, read in place
    config.clone_output = False
    return _returning_tuple(gm, example_inputs, npugraph_ex.get_npu_backend(compiler_config=config))


def _torchair(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
    import torch_npu  # noqa: F401  (puts torchair into sys.modules)
    import torchair

    torch.npu.set_compile_mode(jit_compile=False)
    config = torchair.CompilerConfig()
    config.mode = "reduce-overhead"  # the ACL graph path, not GE; with run_eagerly the capture is ours
    config.debug.run_eagerly = True
    config.debug.aclgraph.disable_reinplace_inplaceable_ops_pass = True
    return _returning_tuple(gm, example_inputs, torchair.get_npu_backend(compiler_config=config))


def lower(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], lowering: str) -> Callable[..., Any]:
    """A callable with the graph's calling convention (`fn(*inputs)`) running the chosen lowering."""
    if lowering == "aten":
        return gm.forward
    if lowering == "inductor":
        return _inductor(gm, example_inputs)
    if lowering == "npugraph_ex":
        return _npugraph_ex(gm, example_inputs)
    return _torchair(gm, example_inputs)
