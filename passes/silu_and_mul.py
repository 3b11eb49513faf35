"""Pass `silu_and_mul`: SwiGLU's `silu(gate) * up` -> `ascend_graph::silu_and_mul(gate, up)`.

Before (any dtype; gate and up are often the two halves of a merged gate_up projection, as in vLLM):

    slice_1 = aten.slice.Tensor(gate_up, 1, 0, 128)
    slice_2 = aten.slice.Tensor(gate_up, 1, 128, 9223372036854775807)
    silu    = aten.silu(slice_1)
    mul     = aten.mul.Tensor(silu, slice_2)            # or mul(slice_2, silu)

After:

    slice_1 = aten.slice.Tensor(gate_up, 1, 0, 128)
    slice_2 = aten.slice.Tensor(gate_up, 1, 128, 9223372036854775807)
    mul     = ascend_graph.silu_and_mul(slice_1, slice_2)

The slices stay: they are views, no kernel; the fused op reads them at their row stride.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .patterns import PatternPass


def silu_then_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def mul_then_silu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return up * F.silu(gate)


def fused(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.ops.ascend_graph.silu_and_mul(gate, up)


def _inputs(dtype: torch.dtype) -> list[Any]:
    return [torch.empty(4, 16, dtype=dtype), torch.empty(4, 16, dtype=dtype)]


SILU_AND_MUL = PatternPass("silu_and_mul", [(silu_then_mul, fused), (mul_then_silu, fused)], _inputs)


def apply(gm: torch.fx.GraphModule) -> int:
    """Fuse every silu(gate) * up; returns the number of fused ops."""
    return SILU_AND_MUL(gm)
