"""`ascend_graph::rms_norm_qkv_rope`: the attention front of a Qwen3 decoder layer in one op: (residual add +)
input RMSNorm, the merged qkv projection, then per-head RMSNorm (q_norm, k_norm) and neox-style rotary embedding
of the q and k heads.

    total     = x + residual                        (x alone when residual is None)
    qkv       = F.linear(RMSNorm(total) * norm_weight, weight)            # [M, (Hq + 2 Hkv) * D]
    q, k, v   = qkv split into Hq, Hkv and Hkv heads of D
    q_h       = RoPE(RMSNorm(q_h) * q_norm)          for every q head h (head_eps), likewise k with k_norm
    returns     (cat(q, k, v) as one [M, (Hq + 2 Hkv) * D] tensor, total)

RoPE is vLLM's `forward_native` with half tables (neox style, the whole head rotated): cos / sin are [M, D / 2],
the rows of `cos_sin_cache.index_select(0, positions)` split in two, and the halves (a, b) of a normalised head
become (a * cos - b * sin, b * cos + a * sin). The output is one tensor rather than three so that the graph's own
split of the qkv output into q, k and v (and its views into heads) stays as it was: q and k come out as views of
it, strided by the whole row, which is how stock vLLM hands them to attention too (its CUDA rotary kernel rotates
q and k in place inside the qkv output).

Roundings are the unfused graph's (as `kernels/decode_ops.py` and `kernels/rope.py` state theirs): the GEMV's
output rounded to the dtype, the per-head normalised value rounded before and after its weight, each product of
the rotation and its sum or difference rounded. On CUDA the input RMSNorm is streamed through the GEMV unless
`exact_rounding` is set or the dtype is float16, exactly as `rms_norm_linear` does. The CUDA kernel
(`kernels/decode_qkv_rope_triton.py`) serves M <= 32 tokens; more tokens, and every CPU call, run the reference.
The same kernel can also store its k and v heads into TRITON_ATTN's paged KV cache (its STORE_KV flag), which
`rms_norm_qkv_rope_kv_cache` (ascend_graph/vllm_plugin/decode_kv_cache.py) uses.
On the NPU, `rms_norm_qkv_rope_npu` (kernels/decode_npu.py) chains torch_npu's norm and rotary operators
(UNVERIFIED: checked against torch_npu's sources and a stand-in, never run on an NPU).
"""

from __future__ import annotations

import torch

from . import decode_ops
from . import rope as rope_ops

OP = "rms_norm_qkv_rope"


def check_qkv_rope(
    x: torch.Tensor,
    weight: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    num_kv_heads: int,
) -> int:
    """The head dim D, or ValueError naming what does not fit: x [M, K], weight [(Hq + 2 Hkv) * D, K], q_norm and
    k_norm [D], cos and sin [M, D / 2], D even."""
    head_dim = q_norm.shape[0] if q_norm.dim() == 1 else -1
    tokens = x.shape[0] if x.dim() == 2 else -1
    heads = num_q_heads + 2 * num_kv_heads
    if (
        x.dim() != 2
        or head_dim < 2
        or head_dim % 2
        or min(num_q_heads, num_kv_heads) < 1
        or weight.dim() != 2
        or weight.shape[0] != heads * head_dim
        or k_norm.shape != q_norm.shape
        or cos.shape != (tokens, head_dim // 2)
        or sin.shape != cos.shape
    ):
        raise ValueError(
            f"ascend_graph::{OP}: needs x [M, K], weight [(Hq + 2 Hkv) * D, K] with Hq = {num_q_heads}, "
            f"Hkv = {num_kv_heads} >= 1, q_norm and k_norm [D] (D even), cos and sin [M, D / 2]; got x "
            f"{tuple(x.shape)}, weight {tuple(weight.shape)}, q_norm {tuple(q_norm.shape)}, k_norm "
            f"{tuple(k_norm.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}"
        )
    decode_ops.check_linear(OP, x, weight, q_norm, k_norm, cos, sin)
    return head_dim


def rms_norm_qkv_rope_reference(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    head_eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    num_kv_heads: int,
    fp32_sum: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused graph: rms_norm_linear, then rms_norm_rope on the q and k heads (rounds as they do)."""
    head_dim = check_qkv_rope(x, weight, q_norm, k_norm, cos, sin, num_q_heads, num_kv_heads)
    qkv, total = decode_ops.rms_norm_linear_reference(x, residual, norm_weight, eps, weight, fp32_sum, False)
    sizes = [num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim]
    q, k, v = qkv.split(sizes, dim=-1)
    cos_heads, sin_heads = cos.unsqueeze(-2), sin.unsqueeze(-2)
    heads = []
    for part, norm, count in ((q, q_norm, num_q_heads), (k, k_norm, num_kv_heads)):
        by_head = part.reshape(x.shape[0], count, head_dim)
        heads.append(rope_ops.rms_norm_rope_reference(by_head, norm, cos_heads, sin_heads, head_eps).flatten(-2))
    return torch.cat((*heads, v), dim=-1), total


@torch.library.custom_op(f"ascend_graph::{OP}", mutates_args=())
def rms_norm_qkv_rope(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    head_eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    num_kv_heads: int,
    fp32_sum: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(qkv with its q and k heads normalised and rotated, x + residual); see the module docstring."""
    return rms_norm_qkv_rope_reference(
        x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, num_q_heads, num_kv_heads,
        fp32_sum,
    )  # fmt: skip


@rms_norm_qkv_rope.register_fake
def _(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    head_eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    num_kv_heads: int,
    fp32_sum: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_qkv_rope(x, weight, q_norm, k_norm, cos, sin, num_q_heads, num_kv_heads)
    decode_ops.check_linear(OP, x, weight, residual, norm_weight)
    return x.new_empty((x.shape[0], weight.shape[0])), x.new_empty(x.shape)
