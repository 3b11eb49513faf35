"""Decode-shaped linear layers with their neighbours fused in: `ascend_graph::decode_linear`,
`ascend_graph::decode_gate_up_silu` and `ascend_graph::rms_norm_linear`.

At decode a layer multiplies a few tokens (M = 1..8, up to 32) by large weights, so each GEMV is bound by how fast
the weight streams from memory, and the small ops around it (add+RMSNorm in front, SiLU-mul or the residual add
behind) each cost a kernel launch, a graph node, of about the same time as the GEMV on small models. These ops put
those neighbours into the GEMV: on CUDA one Triton kernel (`kernels/decode_triton.py`) in which each program owns a
block of output rows, loops over K once with all M tokens in registers (fp32 accumulation, no split-K second pass)
and applies the prologue / epilogue in registers. The reference (the default, CPU) is the unfused torch code.

Each op and the layer site it serves (Qwen3 / Llama as vLLM builds them):
- `decode_linear(x, weight, residual)`: F.linear(x, weight), + residual when given. o_proj and down_proj, whose
  output the residual add consumes next.
- `decode_gate_up_silu(x, weight)`: silu(x @ Wg^T) * (x @ Wu^T) for the merged weight [Wg; Wu] (vLLM's
  MergedColumnParallelLinear: gate rows, then up rows). gate_up_proj + SiluAndMul.
- `rms_norm_linear(x, residual, norm_weight, eps, weight, fp32_sum, silu_mul, exact_rounding)`:
  (F.linear(RMSNorm(x + residual) * norm_weight, weight), x + residual). input_layernorm + qkv_proj; with
  silu_mul, post_attention_layernorm + gate_up_proj + SiluAndMul: the whole MLP front in one kernel.

Roundings are the unfused graph's: the GEMV's output is rounded to the input dtype before SiLU-mul or the residual
add; silu is rounded before the product; the normalised value is rounded before and after the norm weight (see
`kernels/norm.py`, whose `fp32_sum` flag this module's `rms_norm_linear` takes over). One exception, on CUDA: unless
`exact_rounding` is set, `rms_norm_linear` in bfloat16 streams the norm through the GEMV (W @ (RMSNorm(s) * nw) =
rstd * (W @ (s * nw)), rstd applied to the float32 accumulator), so it rounds s * nw once instead of the
normalised value twice: an error of the same size, not the same bits (tests/kernels/test_decode_linear.py states
the bounds). The reference and float16 always round as the graph does (in float32 the streamed form differs by
float32 rounding only). With `residual=None` the second output of `rms_norm_linear` is a copy of x (the residual
stream the next layer site adds to), so that the op's outputs never alias its inputs.

All of x, weight, residual and norm_weight must share one floating dtype; weight is [N, K] as nn.Linear stores it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import norm as norm_ops
from . import swiglu as swiglu_ops

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_linear(op: str, x: torch.Tensor, weight: torch.Tensor, *others: torch.Tensor | None) -> None:
    """Raise ValueError naming the bad argument when the shapes or dtypes are not ones these ops take."""
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"ascend_graph::{op}: weight must be 2-D [N, K] with K = x.shape[-1]; got x {tuple(x.shape)}, "
            f"weight {tuple(weight.shape)}"
        )
    dtypes = {t.dtype for t in (x, weight, *others) if t is not None}
    if len(dtypes) != 1 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"ascend_graph::{op}: x, weight and the other tensors must share one dtype among "
            f"{[str(d) for d in FLOAT_DTYPES]}; got {sorted(str(d) for d in dtypes)}"
        )


def check_gate_up(op: str, weight: torch.Tensor) -> int:
    """Half the rows of a merged [gate; up] weight, or ValueError when their count is odd."""
    if weight.shape[0] % 2:
        raise ValueError(
            f"ascend_graph::{op}: the merged gate_up weight needs an even row count, got {weight.shape[0]}"
        )
    return weight.shape[0] // 2


def decode_linear_reference(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    check_linear("decode_linear", x, weight, residual)
    out = F.linear(x, weight)
    return out if residual is None else out + residual


def decode_gate_up_silu_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    check_linear("decode_gate_up_silu", x, weight)
    inter = check_gate_up("decode_gate_up_silu", weight)
    gate_up = F.linear(x, weight)
    return swiglu_ops.silu_and_mul_reference(gate_up[..., :inter], gate_up[..., inter:])


def rms_norm_linear_reference(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    fp32_sum: bool,
    silu_mul: bool,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused graph; always rounds exactly as it does (`exact_rounding` is for the device kernels)."""
    check_linear("rms_norm_linear", x, weight, residual, norm_weight)
    if norm_weight.shape != x.shape[-1:] or (residual is not None and residual.shape != x.shape):
        raise ValueError(
            f"ascend_graph::rms_norm_linear: norm_weight must be [{x.shape[-1]}] and residual x's shape "
            f"{tuple(x.shape)}; got {tuple(norm_weight.shape)} and "
            f"{None if residual is None else tuple(residual.shape)}"
        )
    if residual is None:
        normed, total = norm_ops.rms_norm_reference(x, norm_weight, eps), x.clone()
    else:
        normed, total = norm_ops.add_rms_norm_reference(x, residual, norm_weight, eps, fp32_sum)
    if silu_mul:
        return decode_gate_up_silu_reference(normed, weight), total
    return F.linear(normed, weight), total


def _out_shape(x: torch.Tensor, n: int) -> tuple[int, ...]:
    return (*x.shape[:-1], n)


@torch.library.custom_op("ascend_graph::decode_linear", mutates_args=())
def decode_linear(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight), plus residual when given (rounded to x's dtype before the add)."""
    return decode_linear_reference(x, weight, residual)


@decode_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    check_linear("decode_linear", x, weight, residual)
    return x.new_empty(_out_shape(x, weight.shape[0]))


@torch.library.custom_op("ascend_graph::decode_gate_up_silu", mutates_args=())
def decode_gate_up_silu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """silu(x @ Wg^T) * (x @ Wu^T) for a merged weight [Wg; Wu] of 2I rows: an [..., I] result."""
    return decode_gate_up_silu_reference(x, weight)


@decode_gate_up_silu.register_fake
def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    check_linear("decode_gate_up_silu", x, weight)
    return x.new_empty(_out_shape(x, check_gate_up("decode_gate_up_silu", weight)))


@torch.library.custom_op("ascend_graph::rms_norm_linear", mutates_args=())
def rms_norm_linear(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    fp32_sum: bool = False,
    silu_mul: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(linear(RMSNorm(x + residual) * norm_weight), x + residual); with silu_mul the linear is the gate_up one
    followed by SiLU-mul; with residual None the second output is a copy of x. exact_rounding: round as the
    unfused graph does even where a device kernel could stream the norm (see the module docstring)."""
    return rms_norm_linear_reference(x, residual, norm_weight, eps, weight, fp32_sum, silu_mul)


@rms_norm_linear.register_fake
def _(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    fp32_sum: bool = False,
    silu_mul: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_linear("rms_norm_linear", x, weight, residual, norm_weight)
    n = check_gate_up("rms_norm_linear", weight) if silu_mul else weight.shape[0]
    return x.new_empty(_out_shape(x, n)), x.new_empty(x.shape)
