"""Stage 2 of `decode_gemv` (passes/decode_qkv_rope.py) on a hand-written decoder in vLLM 0.26's Qwen3 layout with
its attention front as it traces on CUDA: IR RMSNorm traced through, `RotaryEmbedding.forward_native` (positions
index a shared cos_sin_cache, neox halves, chunk + cat, the empty pass-through part), q / k views as
Qwen3Attention writes them. Equal to eager at every token count in float32 and bfloat16, and the structure: one
`rms_norm_qkv_rope` per layer, every q/k norm and rotation gone, what it must not fold left alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ascend_graph.passes import PassReport, apply_passes
from ascend_graph.passes.aten_graph import op_histogram, to_aten
from torch import nn

from tests.passes.test_decode_layer import EPS, HEAD_DIM, HEADS, HIDDEN, INTER, KV_HEADS, TOLERANCES, rms_norm

LAYERS, POSITIONS = 2, 64
TOKEN_COUNTS = (1, 3, 8, 40)  # 40: above the 32 tokens the CUDA kernel serves, where the op runs the reference
QKV_ROPE, ROPE = "ascend_graph.rms_norm_qkv_rope.default", "ascend_graph.rms_norm_rope.default"


def rope_cache(rotary_dim: int) -> torch.Tensor:
    """vLLM's `_compute_cos_sin_cache`: [positions, rotary_dim] = cat(cos, sin) of position * inverse frequency."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float) / rotary_dim))
    freqs = torch.einsum("i,j -> ij", torch.arange(POSITIONS, dtype=torch.float), inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, neox: bool) -> torch.Tensor:
    """ApplyRotaryEmb.forward_static."""
    cos, sin = cos.unsqueeze(-2).to(x.dtype), sin.unsqueeze(-2).to(x.dtype)
    first, second = torch.chunk(x, 2, dim=-1) if neox else (x[..., ::2], x[..., 1::2])
    out = (first * cos - second * sin, second * cos + first * sin)
    return torch.cat(out, dim=-1) if neox else torch.stack(out, dim=-1).flatten(-2)


def rotary_embedding(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, cache: torch.Tensor,
                     rotary_dim: int, neox: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """RotaryEmbedding.forward_static (vLLM 0.26)."""
    positions = positions.flatten()
    cos, sin = cache.index_select(0, positions).chunk(2, dim=-1)
    rotated = []
    for part in (query, key):
        shape = part.shape
        part = part.view(positions.shape[0], -1, HEAD_DIM)
        turned = apply_rotary(part[..., :rotary_dim], cos, sin, neox)
        rotated.append(torch.cat((turned, part[..., rotary_dim:]), dim=-1).reshape(shape))
    return rotated[0], rotated[1]


class Layer(nn.Module):
    """Qwen3DecoderLayer's shape; attention is a per-token stand-in using q, k and v (a piece boundary in vLLM)."""

    def __init__(self, rotary_dim: int, neox: bool) -> None:
        super().__init__()
        self.rotary_dim, self.neox = rotary_dim, neox
        self.input_norm = nn.Parameter(1 + 0.1 * torch.randn(HIDDEN))
        self.qkv_proj = nn.Linear(HIDDEN, (HEADS + 2 * KV_HEADS) * HEAD_DIM, bias=False)
        self.q_norm = nn.Parameter(1 + 0.1 * torch.randn(HEAD_DIM))
        self.k_norm = nn.Parameter(1 + 0.1 * torch.randn(HEAD_DIM))
        self.o_proj = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)
        self.post_norm = nn.Parameter(1 + 0.1 * torch.randn(HIDDEN))
        self.gate_up_proj = nn.Linear(HIDDEN, 2 * INTER, bias=False)
        self.down_proj = nn.Linear(INTER, HIDDEN, bias=False)

    def attention(self, positions: torch.Tensor, hidden: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        """Qwen3Attention.forward up to attention, then the stand-in."""
        q, k, v = self.qkv_proj(hidden).split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q = rms_norm(q.view(*q.shape[:-1], q.shape[-1] // HEAD_DIM, HEAD_DIM), self.q_norm).view(q.shape)
        k = rms_norm(k.view(*k.shape[:-1], k.shape[-1] // HEAD_DIM, HEAD_DIM), self.k_norm).view(k.shape)
        q, k = rotary_embedding(positions, q, k, cache, self.rotary_dim, self.neox)
        q, k = q.view(-1, HEADS, HEAD_DIM), k.view(-1, KV_HEADS, HEAD_DIM)
        scores = torch.softmax((q * k).sum(-1, keepdim=True), dim=1)
        # q and k also enter directly: a dot product of q and k at one position cannot see the rotation (the same
        # for both) nor which of them took which norm weight.
        return (scores * v.view(-1, KV_HEADS, HEAD_DIM) + q + k).reshape(-1, HEADS * HEAD_DIM)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None,
                cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        if residual is None:
            residual, h = x, rms_norm(x, self.input_norm)
        else:
            h, residual = rms_norm(x, self.input_norm, residual)
        h, residual = rms_norm(self.o_proj(self.attention(positions, h, cache)), self.post_norm, residual)
        gate_up = self.gate_up_proj(h)
        return self.down_proj(F.silu(gate_up[..., :INTER]) * gate_up[..., INTER:]), residual


class Decoder(nn.Module):
    """Layers sharing one rotary cache (vLLM's get_rope hands every layer the same module), then the final norm."""

    def __init__(self, rotary_dim: int = HEAD_DIM, neox: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(Layer(rotary_dim, neox) for _ in range(LAYERS))
        self.norm = nn.Parameter(1 + 0.1 * torch.randn(HIDDEN))
        self.register_buffer("cos_sin_cache", rope_cache(rotary_dim), persistent=False)

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, self.cos_sin_cache)
        return rms_norm(x + residual, self.norm)


def _inputs(tokens: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, POSITIONS, (tokens,)), torch.randn(tokens, HIDDEN, dtype=dtype)


def _graph(model: nn.Module, dtype: torch.dtype, passes: list[str]) -> tuple[dict[str, int], Any, PassReport]:
    """(op histogram of the ATen graph before, the graph after, the report) for dynamo's graph at 4 tokens."""
    graphs: list[tuple[torch.fx.GraphModule, list[Any]]] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        graphs.append((gm, example_inputs))
        return gm.forward

    with torch.no_grad():
        torch.compile(model, backend=backend, dynamic=True)(*_inputs(4, dtype))
        gm, example_inputs = graphs[0]
        before = op_histogram(to_aten(gm, example_inputs))
        passed, report = apply_passes(gm, example_inputs, passes)
    return before, passed, report


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qwen3_attention_front_with_decode_gemv_equals_eager_at_every_token_count(dtype: torch.dtype) -> None:
    model = Decoder().to(dtype).eval()
    placed: list[int] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        passed, _ = apply_passes(gm, example_inputs, ["decode_gemv"])
        placed.append(op_histogram(passed).get(QKV_ROPE, 0))
        return passed

    compiled = torch.compile(model, backend=backend, dynamic=True)
    with torch.no_grad():
        for tokens in TOKEN_COUNTS:
            inputs = _inputs(tokens, dtype)
            torch.testing.assert_close(compiled(*inputs), model(*inputs), **TOLERANCES[dtype])
    # Every graph dynamo made (M = 1, specialised, and the symbolic one) has the op at every layer.
    assert placed and all(count == LAYERS for count in placed), placed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("passes", [["decode_gemv"], ["noop_elimination", "decode_gemv"]])
def test_decode_gemv_folds_qk_norm_and_rope_into_the_qkv_gemv(dtype: torch.dtype, passes: list[str]) -> None:
    before, passed, report = _graph(Decoder().to(dtype).eval(), dtype, passes)
    after = op_histogram(passed)
    assert after[QKV_ROPE] == LAYERS and ROPE not in after
    # Per layer: input norm, q norm, k norm, post norm; the final norm is all that stays.
    assert before["aten.rsqrt.default"] == 4 * LAYERS + 1 and after["aten.rsqrt.default"] == 1
    # The rotation (two chunk + cat per q / k) and its multiplies are gone; the positions' cos / sin lookup stays.
    assert before["aten.cat.default"] == 4 * LAYERS and "aten.cat.default" not in after
    assert "aten.sub.Tensor" not in after and after["aten.index_select.default"] == before["aten.index_select.default"]
    # The MLP side is what decode_gemv made of it before this stage.
    assert after["ascend_graph.rms_norm_linear.default"] == LAYERS  # post norm + gate_up + SiLU-mul
    assert after["ascend_graph.decode_linear.default"] == 2 * LAYERS  # o_proj, down_proj
    assert "aten.mm.default" not in after
    fused = [node for node in passed.graph.nodes if str(node.target) == QKV_ROPE]
    # q / k heads and eps as the model has them; the first layer's input norm has no residual, the second's has.
    assert [node.args[10:12] for node in fused] == [(HEADS, KV_HEADS)] * LAYERS
    assert [node.args[1] is None for node in fused] == [True, False] and fused[0].args[7] == EPS
    assert report.ops_after < report.ops_before


@pytest.mark.parametrize(("rotary_dim", "neox"), [(HEAD_DIM // 2, True), (HEAD_DIM, False)])
def _compiled(model: nn.Module, histograms: list[dict[str, int]]) -> Any:
    """`model` compiled through decode_gemv; the op histogram of each graph dynamo makes goes to `histograms`."""

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        passed, _ = apply_passes(gm, example_inputs, ["decode_gemv"])
        histograms.append(op_histogram(passed))
        return passed

    return torch.compile(model, backend=backend, dynamic=True)


def _assert_equal_to_eager(model: nn.Module, compiled: Any, token_counts: tuple[int, ...]) -> None:
    with torch.no_grad():
        for tokens in token_counts:
            inputs = _inputs(tokens, torch.float32)
            torch.testing.assert_close(compiled(*inputs), model(*inputs), **TOLERANCES[torch.float32])


@pytest.mark.parametrize(("rotary_dim", "neox"), [(HEAD_DIM // 2, True), (HEAD_DIM, False)])
def test_partial_or_interleaved_rotary_is_left_alone_and_stays_correct(rotary_dim: int, neox: bool) -> None:
    """Partial rotary and GPT-J (interleaved) rotation are not what the op computes: neither it nor rms_norm_rope
    is placed, the qkv projection keeps its input norm (rms_norm_linear), and the result equals eager."""
    model, histograms = Decoder(rotary_dim, neox).eval(), []
    _assert_equal_to_eager(model, _compiled(model, histograms), (1, 5))
    assert histograms
    for after in histograms:
        assert QKV_ROPE not in after and ROPE not in after
        assert after["ascend_graph.rms_norm_linear.default"] == 2 * LAYERS


class KeyUsedTwice(Decoder):
    """One attention front whose un-rotated keys also leave the graph: the q/k norm + rope still fuse
    (rms_norm_rope), the qkv GEMV cannot take them in."""

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> Any:
        layer = self.layers[0]
        sizes = [HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM]
        q, k, v = layer.qkv_proj(rms_norm(x, layer.input_norm)).split(sizes, dim=-1)
        q_heads = rms_norm(q.view(-1, HEADS, HEAD_DIM), layer.q_norm).view(q.shape)
        k_heads = rms_norm(k.view(-1, KV_HEADS, HEAD_DIM), layer.k_norm).view(k.shape)
        q_out, k_out = rotary_embedding(positions, q_heads, k_heads, self.cos_sin_cache, HEAD_DIM, True)
        return q_out, k_out, v, k * 2


def test_a_qkv_output_used_elsewhere_keeps_the_gemv_apart() -> None:
    model, histograms = KeyUsedTwice().eval(), []
    _assert_equal_to_eager(model, _compiled(model, histograms), (1, 3))
    assert histograms
    for after in histograms:
        assert QKV_ROPE not in after and after[ROPE] == 2 and after["ascend_graph.rms_norm_linear.default"] == 1


class HeadsMergedWithTokens(KeyUsedTwice):
    """The rotated q viewed as [tokens * heads, head_dim] two views later: a view the strided q of the fused op
    cannot take (the token and head dims no longer merge), so the qkv GEMV stays apart."""

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> Any:
        q_out, k_out, v, _ = super().forward(positions, x)
        return q_out.view(-1, HEADS, HEAD_DIM).view(-1, HEAD_DIM) * 2, k_out, v


def test_a_view_that_needs_contiguous_q_keeps_the_gemv_apart() -> None:
    model, histograms = HeadsMergedWithTokens().eval(), []
    _assert_equal_to_eager(model, _compiled(model, histograms), (1, 3))
    # Dynamo's graph for one token (specialised) folds: one row merges with its heads whatever its stride. The
    # graph for any token count (compiled second) must not.
    assert len(histograms) == 2 and histograms[0][QKV_ROPE] == 1, histograms
    after = histograms[1]
    assert QKV_ROPE not in after and after[ROPE] == 2 and after["ascend_graph.rms_norm_linear.default"] == 1
