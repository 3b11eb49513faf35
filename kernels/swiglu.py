"""`ascend_graph::silu_and_mul`: the SwiGLU activation, silu(gate) * up, in one kernel.

Reference semantics, exactly the unfused code: `torch.nn.functional.silu(gate) * up` (silu rounded to gate's
dtype before the product, as eager does). gate and up may be views with a row stride, e.g. the two halves of
vLLM's merged gate_up projection (`x[..., :d]`, `x[..., d:]`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


@torch.library.custom_op("ascend_graph::silu_and_mul", mutates_args=())
def silu_and_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up."""
    return silu_and_mul_reference(gate, up)


@silu_and_mul.register_fake
def _(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(gate.shape, up.shape)
    return gate.new_empty(shape, dtype=torch.promote_types(gate.dtype, up.dtype))
