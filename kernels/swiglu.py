"""`ascend_graph::silu_and_mul`: the SwiGLU activation, silu(gate) * up, in one kernel.

Reference semantics, exactly the unfused code: `torch.nn.functional.silu(gate) * up` (silu rounded to gate's
dtype before the product, as eager does). gate and up may be views with a row stride, e.g. the two halves of
vLLM's merged gate_up projection (`x[..., :d]`, `x[..., d:]`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def merged_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor | None:
    """The one tensor [gate | up] along the last dim, as a view without a copy, where gate and up are its two
    halves (`x[..., :d]`, `x[..., d:]`: vLLM's merged gate_up projection); None where they are not.

    The view is gate's storage read with gate's strides over twice gate's last size: valid only when up starts
    exactly d elements after gate in the same storage, with the same shape, strides, dtype and device, and the
    last dim dense (stride 1), so that every element of the view is an element of gate or of up."""
    if gate.dtype != up.dtype or gate.device != up.device or gate.shape != up.shape or gate.dim() == 0:
        return None
    width = gate.shape[-1]
    if gate.numel() == 0 or gate.stride() != up.stride() or gate.stride(-1) != 1:
        return None
    if gate.untyped_storage().data_ptr() != up.untyped_storage().data_ptr():
        return None
    if up.storage_offset() != gate.storage_offset() + width:
        return None
    rows_ok = all(gate.stride(dim) >= 2 * width for dim in range(gate.dim() - 1) if gate.shape[dim] > 1)
    if not rows_ok:  # a row stride under 2d would make the rows of the view overlap
        return None
    return gate.as_strided((*gate.shape[:-1], 2 * width), gate.stride(), gate.storage_offset())


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
