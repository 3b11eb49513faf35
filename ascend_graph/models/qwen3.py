"""A Qwen3-style decoder for one decode step with a static KV cache, in plain PyTorch.

Used by the tests (tiny shapes, float32) and the benchmarks (public Qwen3 shapes, random bf16 weights). It has
what makes Qwen3's decode step: embedding, per layer RMSNorm -> QKV projection -> per-head QK RMSNorm -> rotary
embedding -> KV-cache write -> grouped-query attention over the cache -> output projection -> residual ->
RMSNorm -> SwiGLU MLP -> residual, final norm, LM head.

Cache layout: `kv_cache[layer, k|v, row, position, kv_head, head_dim]`. Batch row `b` of a step owns cache row
`b`; the cache has one extra position, `max_seq`, that no real token uses: padded rows are sent there with
`pad_values={"positions": max_seq}`, so padding writes nowhere that matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Qwen3Shape:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tie_embeddings: bool = False
    rope_theta: float = 1_000_000.0
    eps: float = 1e-6

    def parameter_count(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads) + 2 * self.head_dim
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tie_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden


SHAPES = {
    # Public Qwen3 configs (hidden, layers, heads, KV heads, head_dim, intermediate, vocab).
    "qwen3-0.6b": Qwen3Shape(151936, 1024, 28, 16, 8, 128, 3072, tie_embeddings=True),
    "qwen3-8b": Qwen3Shape(151936, 4096, 36, 32, 8, 128, 12288),
    # Small enough for the 2-core CPU lane.
    "tiny": Qwen3Shape(512, 64, 2, 4, 2, 32, 128),
}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(variance + eps)).to(x.dtype) * weight


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


class Qwen3Layer(nn.Module):
    def __init__(self, shape: Qwen3Shape, index: int) -> None:
        super().__init__()
        self.shape, self.index = shape, index
        q_size, kv_size = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        self.input_norm = nn.Parameter(torch.ones(shape.hidden))
        self.qkv_proj = nn.Linear(shape.hidden, q_size + 2 * kv_size, bias=False)
        self.q_norm = nn.Parameter(torch.ones(shape.head_dim))
        self.k_norm = nn.Parameter(torch.ones(shape.head_dim))
        self.o_proj = nn.Linear(q_size, shape.hidden, bias=False)
        self.post_norm = nn.Parameter(torch.ones(shape.hidden))
        self.gate_proj = nn.Linear(shape.hidden, shape.intermediate, bias=False)
        self.up_proj = nn.Linear(shape.hidden, shape.intermediate, bias=False)
        self.down_proj = nn.Linear(shape.intermediate, shape.hidden, bias=False)

    def attention(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        cache: torch.Tensor,
    ) -> torch.Tensor:
        shape, batch = self.shape, x.shape[0]
        q_size, kv_size = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q = rms_norm(q.view(batch, shape.heads, shape.head_dim), self.q_norm, shape.eps)
        k = rms_norm(k.view(batch, shape.kv_heads, shape.head_dim), self.k_norm, shape.eps)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        rows = torch.arange(batch, device=x.device)
        layer = torch.full_like(rows, self.index)
        # One in-place index_put_ on the whole cache, not on a per-layer view: functionalisation turns a write
        # through a view of a large buffer into a copy of the buffer (seen: inductor 40x slower than eager).
        cache.index_put_((layer, torch.zeros_like(rows), rows, positions), k)
        cache.index_put_((layer, torch.ones_like(rows), rows, positions), v.view(batch, shape.kv_heads, -1))
        keys = cache[self.index, 0, :batch].permute(0, 2, 3, 1)  # (batch, kv_heads, head_dim, seq)
        values = cache[self.index, 1, :batch].transpose(1, 2)  # (batch, kv_heads, seq, head_dim)
        group = shape.heads // shape.kv_heads
        q = q.view(batch, shape.kv_heads, group, shape.head_dim)
        scores = torch.matmul(q, keys).float() * shape.head_dim**-0.5
        seq = torch.arange(cache.shape[3], device=x.device)
        visible = (seq[None, :] <= positions[:, None])[:, None, None, :]
        probs = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1).to(x.dtype)
        out = torch.matmul(probs, values).reshape(batch, q_size)
        return self.o_proj(out)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        cache: torch.Tensor,
    ) -> torch.Tensor:
        x = x + self.attention(rms_norm(x, self.input_norm, self.shape.eps), cos, sin, positions, cache)
        h = rms_norm(x, self.post_norm, self.shape.eps)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Qwen3Decoder(nn.Module):
    """One decode step: `forward(token_ids[B], positions[B]) -> logits[B, vocab]` for B <= max_batch."""

    def __init__(self, shape: Qwen3Shape, max_batch: int, max_seq: int) -> None:
        super().__init__()
        self.shape, self.max_batch, self.max_seq = shape, max_batch, max_seq
        self.embed = nn.Embedding(shape.vocab, shape.hidden)
        self.layers = nn.ModuleList(Qwen3Layer(shape, index) for index in range(shape.layers))
        self.norm = nn.Parameter(torch.ones(shape.hidden))
        self.lm_head = None if shape.tie_embeddings else nn.Linear(shape.hidden, shape.vocab, bias=False)
        cache = torch.zeros(shape.layers, 2, max_batch, max_seq + 1, shape.kv_heads, shape.head_dim)
        self.register_buffer("kv_cache", cache, persistent=False)
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, shape.head_dim, 2).float() / shape.head_dim))
        angles = torch.outer(torch.arange(max_seq + 1).float(), inv_freq)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)

    @property
    def pad_values(self) -> dict[str, int]:
        """Pad values that keep padded rows away from real cache positions (the scratch position)."""
        return {"positions": self.max_seq}

    def forward(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed(token_ids)
        cos = self.rope_cos[positions][:, None, :].to(x.dtype)
        sin = self.rope_sin[positions][:, None, :].to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, positions, self.kv_cache)
        x = rms_norm(x, self.norm, self.shape.eps)
        if self.lm_head is None:
            return F.linear(x, self.embed.weight)
        return self.lm_head(x)


def build_decoder(
    shape: Qwen3Shape | str,
    max_batch: int,
    max_seq: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Qwen3Decoder:
    """A decoder with random weights (std 0.02, norms at 1), built directly on `device` in `dtype`."""
    shape = SHAPES[shape] if isinstance(shape, str) else shape
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3Decoder(shape, max_batch, max_seq)
    for name, parameter in model.named_parameters():
        if "norm" not in name:
            nn.init.normal_(parameter, std=0.02)
    return model.to(dtype).eval().requires_grad_(False)
