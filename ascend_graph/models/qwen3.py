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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


# (layer index, new K, new V) -> (keys, values, visibility mask) for the attention of that layer
CacheIO = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


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

    def attention(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_io: CacheIO) -> torch.Tensor:
        shape, batch = self.shape, x.shape[0]
        q_size, kv_size = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        q = rms_norm(q.view(batch, shape.heads, shape.head_dim), self.q_norm, shape.eps)
        k = rms_norm(k.view(batch, shape.kv_heads, shape.head_dim), self.k_norm, shape.eps)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        keys, values, visible = cache_io(self.index, k, v.view(batch, shape.kv_heads, shape.head_dim))
        group = shape.heads // shape.kv_heads
        q = q.view(batch, shape.kv_heads, group, shape.head_dim)
        scores = torch.matmul(q, keys).float() * shape.head_dim**-0.5
        probs = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1).to(x.dtype)
        out = torch.matmul(probs, values).reshape(batch, q_size)
        return self.o_proj(out)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_io: CacheIO) -> torch.Tensor:
        x = x + self.attention(rms_norm(x, self.input_norm, self.shape.eps), cos, sin, cache_io)
        h = rms_norm(x, self.post_norm, self.shape.eps)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


# (shape, layer index) -> layer; the tensor-parallel decoder passes its own (models/qwen3_tp.py)
LayerFactory = Callable[[Qwen3Shape, int], Qwen3Layer]


class _Qwen3Base(nn.Module):
    """Weights, rotary tables and the layer loop shared by the static-cache and the paged decoder."""

    def __init__(self, shape: Qwen3Shape, max_seq: int, layer: LayerFactory = Qwen3Layer) -> None:
        super().__init__()
        self.shape, self.max_seq = shape, max_seq
        self.embed = nn.Embedding(shape.vocab, shape.hidden)
        self.layers = nn.ModuleList(layer(shape, index) for index in range(shape.layers))
        self.norm = nn.Parameter(torch.ones(shape.hidden))
        self.lm_head = None if shape.tie_embeddings else nn.Linear(shape.hidden, shape.vocab, bias=False)
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, shape.head_dim, 2).float() / shape.head_dim))
        angles = torch.outer(torch.arange(max_seq + 1).float(), inv_freq)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def run_layers(self, token_ids: torch.Tensor, positions: torch.Tensor, cache_io: CacheIO) -> torch.Tensor:
        x = self.embed(token_ids)
        cos = self.rope_cos[positions][:, None, :].to(x.dtype)
        sin = self.rope_sin[positions][:, None, :].to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, cache_io)
        x = rms_norm(x, self.norm, self.shape.eps)
        if self.lm_head is None:
            return F.linear(x, self.embed.weight)
        return self.lm_head(x)


class Qwen3Decoder(_Qwen3Base):
    """One decode step: `forward(token_ids[B], positions[B]) -> logits[B, vocab]` for B <= max_batch.

    Batch row `b` owns cache row `b`; `kv_cache[layer, k|v, row, position, kv_head, head_dim]`."""

    def __init__(self, shape: Qwen3Shape, max_batch: int, max_seq: int) -> None:
        super().__init__(shape, max_seq)
        self.max_batch = max_batch
        cache = torch.zeros(shape.layers, 2, max_batch, max_seq + 1, shape.kv_heads, shape.head_dim)
        self.register_buffer("kv_cache", cache, persistent=False)

    @property
    def pad_values(self) -> dict[str, int]:
        """Pad values that keep padded rows away from real cache positions (the scratch position)."""
        return {"positions": self.max_seq}

    def forward(self, token_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        cache, batch = self.kv_cache, token_ids.shape[0]
        rows = torch.arange(batch, device=token_ids.device)
        seq = torch.arange(cache.shape[3], device=token_ids.device)
        visible = (seq[None, :] <= positions[:, None])[:, None, None, :]

        def cache_io(index: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
            layer = torch.full_like(rows, index)
            # One in-place index_put_ on the whole cache, not on a per-layer view: functionalisation turns a
            # write through a view of a large buffer into a copy of it (seen: inductor 40x slower than eager).
            cache.index_put_((layer, torch.zeros_like(rows), rows, positions), k)
            cache.index_put_((layer, torch.ones_like(rows), rows, positions), v)
            keys = cache[index, 0, :batch].permute(0, 2, 3, 1)  # (batch, kv_heads, head_dim, seq)
            values = cache[index, 1, :batch].transpose(1, 2)  # (batch, kv_heads, seq, head_dim)
            return keys, values, visible

        return self.run_layers(token_ids, positions, cache_io)


class PagedQwen3Decoder(_Qwen3Base):
    """One decode step over a paged KV cache, vLLM style.

    `forward(token_ids[B], positions[B], slot_mapping[B], block_tables[B, max_blocks], seq_lens[B])`:
    the new token's K/V go to `slot_mapping` (slot = block * block_size + offset), attention reads the blocks in
    each row's block table up to `seq_lens`. Block 0 is the null block no request owns: padded rows write slot 0
    (`pad_values`), so padding writes nowhere that matters."""

    def __init__(
        self,
        shape: Qwen3Shape,
        num_blocks: int,
        block_size: int,
        max_blocks_per_seq: int,
        layer: LayerFactory = Qwen3Layer,
    ) -> None:
        super().__init__(shape, max_blocks_per_seq * block_size, layer)
        self.num_blocks, self.block_size, self.max_blocks_per_seq = num_blocks, block_size, max_blocks_per_seq
        cache = torch.zeros(shape.layers, 2, num_blocks * block_size, shape.kv_heads, shape.head_dim)
        self.register_buffer("kv_cache", cache, persistent=False)

    pad_values = {"slot_mapping": 0, "block_tables": 0, "seq_lens": 1, "positions": 0}

    def forward(
        self,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        slot_mapping: torch.Tensor,
        block_tables: torch.Tensor,
        seq_lens: torch.Tensor,
    ) -> torch.Tensor:
        # One batch size for every per-row input: dynamo then traces one batch symbol instead of one per input
        # (the ascend_graph backend buckets one symbol and pins the others).
        for per_row in (positions, slot_mapping, block_tables, seq_lens):
            torch._check(per_row.shape[0] == token_ids.shape[0])
        cache = self.kv_cache
        offsets = torch.arange(self.block_size, device=token_ids.device)
        slots = (block_tables[:, :, None] * self.block_size + offsets).flatten(1)  # (batch, max_seq)
        seq = torch.arange(slots.shape[1], device=token_ids.device)
        visible = (seq[None, :] < seq_lens[:, None])[:, None, None, :]

        def cache_io(index: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
            layer = torch.full_like(slot_mapping, index)
            cache.index_put_((layer, torch.zeros_like(slot_mapping), slot_mapping), k)
            cache.index_put_((layer, torch.ones_like(slot_mapping), slot_mapping), v)
            keys = cache[index, 0][slots].permute(0, 2, 3, 1)  # (batch, kv_heads, head_dim, seq)
            values = cache[index, 1][slots].transpose(1, 2)  # (batch, kv_heads, seq, head_dim)
            return keys, values, visible

        return self.run_layers(token_ids, positions, cache_io)


def build_decoder(
    shape: Qwen3Shape | str,
    max_batch: int,
    max_seq: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Qwen3Decoder:
    """A static-cache decoder with random weights, built directly on `device` in `dtype`."""
    return _built(Qwen3Decoder, shape, dtype, device, seed, max_batch, max_seq)


def build_paged_decoder(
    shape: Qwen3Shape | str,
    num_blocks: int,
    block_size: int,
    max_blocks_per_seq: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> PagedQwen3Decoder:
    """A paged-cache decoder with random weights, built directly on `device` in `dtype`."""
    return _built(PagedQwen3Decoder, shape, dtype, device, seed, num_blocks, block_size, max_blocks_per_seq)


def _built(cls: type, shape: Qwen3Shape | str, dtype: torch.dtype, device: Any, seed: int, *sizes: int) -> Any:
    """`cls(shape, *sizes)` on `device`, weights ~ N(0, 0.02) from `seed`, norms at 1, in `dtype`, inference only."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls(SHAPES[shape] if isinstance(shape, str) else shape, *sizes)
    for name, parameter in model.named_parameters():
        if "norm" not in name:
            nn.init.normal_(parameter, std=0.02)
    return inference_only(model, dtype)


def inference_only(model: nn.Module, dtype: torch.dtype) -> Any:
    return model.to(dtype).eval().requires_grad_(False)
