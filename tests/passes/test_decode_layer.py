"""Pass `decode_gemv` on a hand-written decoder in vLLM's Qwen3 layout (merged qkv and gate_up projections, tokens
flattened to [M, hidden], each layer returning (hidden, residual) with the add deferred to the next norm): the
graph dynamo hands a backend, retraced by `apply_passes` as the vLLM compiler does, equals eager on fresh inputs at
every token count, and the op counts before/after say which chains became which decode op."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ascend_graph.passes import PassReport, apply_passes
from ascend_graph.passes.aten_graph import op_histogram, to_aten
from torch import nn

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, LAYERS, EPS = 64, 2, 1, 32, 128, 2, 1e-6
# float32: the decode ops' CPU reference runs the unfused graph's torch ops, so only summation order may differ.
# bfloat16: two units in the last place of values around 1.
TOLERANCES = {torch.float32: {"atol": 1e-5, "rtol": 1e-4}, torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2}}
TOKEN_COUNTS = (1, 3, 8, 40)  # 40: above the 32 tokens the CUDA GEMV serves, where the ops run the reference


def rms_norm(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> Any:
    """vLLM's RMSNorm.forward_native: the residual added in float32, the sum rounded back as the new residual."""
    x32 = x.to(torch.float32)
    if residual is not None:
        x32 = x32 + residual.to(torch.float32)
        residual = x32.to(x.dtype)
    normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * weight
    return normed if residual is None else (normed, residual)


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_norm = nn.Parameter(1 + 0.1 * torch.randn(HIDDEN))
        self.qkv_proj = nn.Linear(HIDDEN, (HEADS + 2 * KV_HEADS) * HEAD_DIM, bias=False)
        self.q_norm = nn.Parameter(1 + 0.1 * torch.randn(HEAD_DIM))
        self.k_norm = nn.Parameter(1 + 0.1 * torch.randn(HEAD_DIM))
        self.o_proj = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)
        self.post_norm = nn.Parameter(1 + 0.1 * torch.randn(HIDDEN))
        self.gate_up_proj = nn.Linear(HIDDEN, 2 * INTER, bias=False)
        self.down_proj = nn.Linear(INTER, HIDDEN, bias=False)

    def mixer(self, qkv: torch.Tensor) -> torch.Tensor:
        """Stands in for QK-norm + RoPE + attention (a piece boundary in vLLM): per-token, using q, k and v."""
        q, k, v = qkv.split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q = rms_norm(q.view(-1, HEADS, HEAD_DIM), self.q_norm)
        k = rms_norm(k.view(-1, KV_HEADS, HEAD_DIM), self.k_norm)
        scores = torch.softmax((q * k).sum(-1, keepdim=True), dim=1)
        return (scores * v.view(-1, KV_HEADS, HEAD_DIM)).reshape(-1, HEADS * HEAD_DIM)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual, h = x, rms_norm(x, self.input_norm)
        else:
            h, residual = rms_norm(x, self.input_norm, residual)
        h, residual = rms_norm(self.o_proj(self.mixer(self.qkv_proj(h))), self.post_norm, residual)
        gate_up = self.gate_up_proj(h)
        return self.down_proj(F.silu(gate_up[..., :INTER]) * gate_up[..., INTER:]), residual


class Decoder(nn.Module):
    """Layers, then the last residual add (a plain add, as transformers writes it) and the final norm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.norm = nn.Parameter(1 + 0.1 * torch.randn(HIDDEN))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = None
        for layer in self.layers:
            x, residual = layer(x, residual)
        return rms_norm(x + residual, self.norm)


def _passed(model: nn.Module, reports: list[PassReport]) -> Any:
    """`model` compiled by a backend that runs the graph `apply_passes(..., ["decode_gemv"])` returns."""

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        passed, report = apply_passes(gm, example_inputs, ["decode_gemv"])
        reports.append(report)
        return passed

    return torch.compile(model, backend=backend, dynamic=True)


def _dynamo_graph(model: nn.Module, x: torch.Tensor) -> tuple[torch.fx.GraphModule, list[Any]]:
    graphs: list[tuple[torch.fx.GraphModule, list[Any]]] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        graphs.append((gm, example_inputs))
        return gm.forward

    with torch.no_grad():
        torch.compile(model, backend=backend, dynamic=True)(x)
    assert len(graphs) == 1, f"expected one graph, dynamo gave {len(graphs)}"
    return graphs[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decoder_with_decode_gemv_equals_eager_at_every_token_count(dtype: torch.dtype) -> None:
    model = Decoder().to(dtype).eval()
    reports: list[PassReport] = []
    compiled = _passed(model, reports)
    with torch.no_grad():
        for tokens in TOKEN_COUNTS:
            x = torch.randn(tokens, HIDDEN, dtype=dtype)
            torch.testing.assert_close(compiled(x), model(x), **TOLERANCES[dtype])
    # Every graph dynamo made (one for M = 1, which it specialises, one for the rest) was rewritten.
    assert reports and all(report.replaced["decode_gemv"] > 0 for report in reports), reports


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changes = {op: after.get(op, 0) - before.get(op, 0) for op in set(before) | set(after)}
    return {op: change for op, change in changes.items() if change}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_gemv_places_the_decode_ops_and_removes_the_chains(dtype: torch.dtype) -> None:
    model = Decoder().to(dtype).eval()
    gm, example_inputs = _dynamo_graph(model, torch.randn(4, HIDDEN, dtype=dtype))
    with torch.no_grad():
        before = op_histogram(to_aten(gm, example_inputs))
        passed, report = apply_passes(gm, example_inputs, ["decode_gemv"])
    delta = _delta(before, op_histogram(passed))
    # silu_mul is the 7th argument; traced calls leave fp32_sum and it out at their default (False).
    silu_mul = [[*node.args, False, False][6] for node in passed.graph.nodes if "rms_norm_linear" in str(node.target)]
    # Norm + linear: the first input norm (no add) + qkv, then per layer post-norm + gate_up + SiLU-mul, and the
    # next layer's add + input norm + qkv; the final norm feeds no linear and stays.
    assert delta["ascend_graph.rms_norm_linear.default"] == 2 * LAYERS
    assert sorted(silu_mul) == [False] * LAYERS + [True] * LAYERS
    # o_proj and down_proj of every layer; the last down_proj takes its residual add (float32, where it is a plain
    # add; bfloat16 adds x + residual in bfloat16 too, so the same).
    assert delta["ascend_graph.decode_linear.default"] == 2 * LAYERS
    assert delta["aten.mm.default"] == -4 * LAYERS and delta["aten.t.default"] == -4 * LAYERS
    assert delta["aten.silu.default"] == -LAYERS and delta["aten.slice.Tensor"] == -2 * LAYERS
    # 2 per layer (input, post) + the final norm; only the final one and the QK-norms stay.
    assert delta["aten.rsqrt.default"] == -2 * LAYERS
    residual_adds = [node for node in passed.graph.nodes if "decode_linear" in str(node.target) and node.args[2]]
    assert len(residual_adds) == 1
    assert "ascend_graph.decode_gate_up_silu.default" not in delta  # every gate_up had its norm in front
    assert report.replaced == {"decode_gemv": 4 * LAYERS}  # 2L norm+linear + 2L GEMVs (one with its add)
    assert report.ops_after < report.ops_before


class GateUpOnly(nn.Module):
    """A gate_up projection with SiLU-mul and no norm in front, a down projection, and an mm of two activations."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.gate_up_proj = nn.Linear(HIDDEN, 2 * INTER, bias=False)
        self.down_proj = nn.Linear(INTER, HIDDEN, bias=False)
        self.biased = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate_up = self.gate_up_proj(x)
        out = self.down_proj(F.silu(gate_up[..., :INTER]) * gate_up[..., INTER:])
        return self.biased(out), x @ y.t()  # neither the biased linear (addmm) nor x @ y^T is a decode GEMV


def test_gate_up_without_norm_becomes_decode_gate_up_silu_and_other_mms_stay() -> None:
    model = GateUpOnly().eval()
    reports: list[PassReport] = []
    compiled = _passed(model, reports)
    with torch.no_grad():
        for tokens in TOKEN_COUNTS:
            x, y = torch.randn(tokens, HIDDEN), torch.randn(tokens, HIDDEN)
            torch.testing.assert_close(compiled(x, y), model(x, y), **TOLERANCES[torch.float32])
    ops = op_histogram(_last_graph(model))
    assert ops["ascend_graph.decode_gate_up_silu.default"] == 1
    assert ops["ascend_graph.decode_linear.default"] == 1 and ops["aten.addmm.default"] == 1
    assert ops["aten.mm.default"] == 1  # x @ y^T: y is an activation (a symbolic token dimension)
    assert "aten.silu.default" not in ops
    # Dynamo specialises M = 1: there y has a static shape and passes for a weight (x @ y^T becomes a decode_linear,
    # which computes the same F.linear, hence the equal outputs above); with a symbolic M it is left alone.
    assert sorted(report.replaced["decode_gemv"] for report in reports) == [2, 3], reports


def _last_graph(model: nn.Module) -> torch.fx.GraphModule:
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        graphs.append(apply_passes(gm, example_inputs, ["decode_gemv"])[0])
        return graphs[-1]

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=backend, dynamic=True)(torch.randn(4, HIDDEN), torch.randn(4, HIDDEN))
    return graphs[-1]
