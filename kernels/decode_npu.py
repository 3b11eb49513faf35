"""NPU implementations of the decode ops (`kernels/decode_ops.py`, `kernels/decode_qkv_rope.py`) through
torch_npu. UNVERIFIED: no NPU in reach; the names and signatures are checked against the torch-npu 2.11.0 sources
by the conformance check (`python -m ascend_graph.conformance`), the maths against a stand-in torch_npu in the
tests; never run on an NPU.

torch_npu has no RMSNorm-prologue GEMV; what it has is used, the rest is the reference decomposition:
- decode_linear with a residual -> torch_npu.npu_fused_matmul(x, weight^T, x3=residual, fused_op_type="add")
  (the add happens before the product is rounded, so it may differ from the reference by one unit in the last
  place); without a residual -> F.linear (the reference).
- decode_gate_up_silu -> F.linear, then torch_npu.npu_swiglu on the merged [gate; up] output (its layout: gate
  half first), as `silu_and_mul_npu` does.
- rms_norm_linear -> the norm through `rms_norm_npu` / `add_rms_norm_npu` (npu_rms_norm / npu_add_rms_norm), then
  the linear (and npu_swiglu with silu_mul).
- rms_norm_qkv_rope -> rms_norm_linear_npu for the input norm and the qkv linear, torch_npu.npu_rms_norm on the
  [M, H, D] views of the q and k heads (their q_norm / k_norm), then neox RoPE on both (see `_rope_q_k`). Those
  views are strided (a row of the qkv output apart); npu_rms_norm's docs (2-8 dimensions) do not say whether its
  kernel reads strided input or torch_npu copies it first (unverified).

RoPE on the NPU. Two torch_npu operators compute the neox ("half") rotation out = x * cos + rotate_half(x) * sin
with full-width tables (cos = cat(c, c) for vLLM's half tables c), which is the reference's rotation of the halves
(a, b) into (a * cos - b * sin, b * cos + a * sin):
- npu_apply_rotary_pos_emb(query, key, cos, sin, layout='BSND', rotary_mode='half') rotates q and k in one
  operator. Its docs (torch-npu 2.11.0 _op_plugin_docs.py) on Atlas A2 / A3: 4-D BSND query [B, S, Nq, D] and key
  [B, S, Nk, D], cos and sin [B, S, 1, D], one dtype for all four, no empty tensors, D 64 or 128; it updates query
  and key in place although its schema returns two tensors (torchair's converter warns so), so it gets freshly
  normalised heads and its returned tensors are used. The formula is the one vllm-ascend writes beside its call
  (vllm_ascend/_310p/ops/rotary_embedding.py: "q * cos + rotate(q) * sin, where cos/sin have full rotary dim"),
  which calls it so for head_size 128. Used where D is 64 or 128 (Qwen3: 128). (Atlas inference cards: no bf16.)
- npu_rotary_mul(input, r1, r2, rotary_mode='half') otherwise, once for q and once for k: 4-D input, r1 / r2 of
  the layout its docs allow for BSND input (1S1D here), D even and < 896, B and N < 1000.
Rounding: each operator is one kernel, so in bfloat16 / float16 its rotation need not round each product and
sum as the reference does (which rounding it uses is not documented); npu_rms_norm likewise may round the
normalised value once. Like rms_norm_linear_npu, `exact_rounding` changes nothing here (there is no streamed norm)
and `fp32_sum` is honoured through add_rms_norm_npu (its reference fallback for fp32_sum=False below float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import decode_ops as ops
from . import decode_qkv_rope as qkv_rope
from .npu import add_rms_norm_npu, rms_norm_npu

# npu_apply_rotary_pos_emb's head dims on Atlas A2 / A3 (its docs in torch-npu 2.11.0); others use npu_rotary_mul.
APPLY_ROTARY_HEAD_DIMS = (64, 128)


def decode_linear_npu(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    import torch_npu

    ops.check_linear("decode_linear", x, weight, residual)
    if residual is None or x.dim() < 2 or residual.shape != (*x.shape[:-1], weight.shape[0]):
        return ops.decode_linear_reference(x, weight, residual)
    return torch_npu.npu_fused_matmul(x, weight.t(), x3=residual, fused_op_type="add")


def _gate_up_silu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    import torch_npu

    return torch_npu.npu_swiglu(F.linear(x, weight), dim=-1)


def decode_gate_up_silu_npu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    ops.check_linear("decode_gate_up_silu", x, weight)
    ops.check_gate_up("decode_gate_up_silu", weight)
    return _gate_up_silu(x, weight)


def rms_norm_linear_npu(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    norm_weight: torch.Tensor,
    eps: float,
    weight: torch.Tensor,
    fp32_sum: bool = False,
    silu_mul: bool = False,
    exact_rounding: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The norm kernel, then the linear: no streamed norm here, so `exact_rounding` changes nothing."""
    ops.check_linear("rms_norm_linear", x, weight, residual, norm_weight)
    if silu_mul:
        ops.check_gate_up("rms_norm_linear", weight)
    if norm_weight.shape != x.shape[-1:] or residual is not None and residual.shape != x.shape:
        return ops.rms_norm_linear_reference(x, residual, norm_weight, eps, weight, fp32_sum, silu_mul)
    if residual is None:
        normed, total = rms_norm_npu(x, norm_weight, eps), x.clone()
    else:
        normed, total = add_rms_norm_npu(x, residual, norm_weight, eps, fp32_sum)
    out = _gate_up_silu(normed, weight) if silu_mul else F.linear(normed, weight)
    return out, total


def _rope_q_k(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> list[torch.Tensor]:
    """Neox RoPE of normalised heads q [M, Hq, D] and k [M, Hkv, D] with half tables cos, sin [M, D / 2]: the
    rotated q and k as [M, Hq * D] and [M, Hkv * D]. Both go in as BSND with B = 1, S = M (the module docstring)."""
    import torch_npu

    tokens, head_dim = q.shape[0], q.shape[-1]
    full_cos = torch.cat((cos, cos), dim=-1).reshape(1, tokens, 1, head_dim)
    full_sin = torch.cat((sin, sin), dim=-1).reshape(1, tokens, 1, head_dim)
    query = q.reshape(1, tokens, q.shape[1], head_dim)
    key = k.reshape(1, tokens, k.shape[1], head_dim)
    if head_dim in APPLY_ROTARY_HEAD_DIMS:
        query, key = torch_npu.npu_apply_rotary_pos_emb(query, key, full_cos, full_sin, rotary_mode="half")
    else:
        query, key = (torch_npu.npu_rotary_mul(heads, full_cos, full_sin, rotary_mode="half") for heads in (query, key))
    return [query.reshape(tokens, q.shape[1] * head_dim), key.reshape(tokens, k.shape[1] * head_dim)]


def rms_norm_qkv_rope_npu(
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
    """rms_norm_linear_npu, npu_rms_norm per q / k head, then `_rope_q_k`; zero tokens run the reference (the
    rotary operators take no empty tensors). UNVERIFIED: checked against torch_npu's sources and a stand-in
    torch_npu in the tests (tests/kernels/test_decode_qkv_rope_npu.py), never run on an NPU."""
    import torch_npu

    head_dim = qkv_rope.check_qkv_rope(x, weight, q_norm, k_norm, cos, sin, num_q_heads, num_kv_heads)
    if x.shape[0] == 0:
        return qkv_rope.rms_norm_qkv_rope_reference(
            x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, num_q_heads, num_kv_heads,
            fp32_sum,
        )  # fmt: skip
    qkv, total = rms_norm_linear_npu(x, residual, norm_weight, eps, weight, fp32_sum)
    q, k, v = qkv.split([num_q_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], dim=-1)
    tokens = x.shape[0]
    q_heads = torch_npu.npu_rms_norm(q.view(tokens, num_q_heads, head_dim), q_norm, epsilon=head_eps)[0]
    k_heads = torch_npu.npu_rms_norm(k.view(tokens, num_kv_heads, head_dim), k_norm, epsilon=head_eps)[0]
    return torch.cat((*_rope_q_k(q_heads, k_heads, cos, sin), v), dim=-1), total


def register() -> None:
    """Register the torch_npu implementations for the "npu" device (needs torch_npu imported)."""
    ops.decode_linear.register_kernel("npu")(decode_linear_npu)
    ops.decode_gate_up_silu.register_kernel("npu")(decode_gate_up_silu_npu)
    ops.rms_norm_linear.register_kernel("npu")(rms_norm_linear_npu)
    qkv_rope.rms_norm_qkv_rope.register_kernel("npu")(rms_norm_qkv_rope_npu)
