"""The paged Qwen3 decoder split tensor-parallel over ranks (Megatron style), with seeded shardable weights.

Per layer, on rank r of a world of W:

- qkv_proj is column-parallel: the rank holds heads [r*H/W, (r+1)*H/W) of Q and KV heads [r*K/W, (r+1)*K/W) of
  K and V (contiguous blocks, so each rank's query heads keep their KV group), and its share of the paged KV cache;
- o_proj is row-parallel: each rank multiplies its heads' slice and the partial sums are all-reduced;
- gate_proj and up_proj are column-parallel, down_proj row-parallel + all-reduce.

Embeddings, norms and lm_head are replicated: after each all-reduce every rank holds the same hidden state, so
every rank computes the same full logits and samples the same token without a gather (the cost: each rank reads
the whole vocabulary matrix every step; a vocab-parallel head would need an all-gather of logits or of per-shard
argmaxes).

The all-reduce is `torch.ops._c10d_functional.all_reduce` + `wait_tensor`: the functional collectives that dynamo
traces as ordinary ops and inductor lowers, and that run eagerly through the process group (NCCL on CUDA, gloo on
the CPU), inside a CUDA graph capture as well (the communicator must exist before capture: run one collective
first, see `runner/distributed.py`).

Weights come from one generator per parameter name, seeded from (seed, name), drawn at the full (world 1) shape
and sliced, so rank r's shards are exactly slices of the world-1 model's weights and TP=W can be compared with TP=1.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .qwen3 import SHAPES, CacheIO, PagedQwen3Decoder, Qwen3Layer, Qwen3Shape, inference_only, rms_norm

WEIGHT_STD = 0.02


@dataclass(frozen=True)
class TensorParallel:
    """Where this rank sits: `group_name` names the torch.distributed group the all-reduces go through."""

    rank: int = 0
    world_size: int = 1
    group_name: str | None = None
    # False only to show that the tests can fail: row-parallel partial sums are then used unreduced.
    all_reduce: bool = True

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"tensor parallel: world_size={self.world_size} is not allowed; it must be >= 1")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"tensor parallel: rank={self.rank} is not allowed; it must be in [0, {self.world_size})")
        if self.world_size > 1 and self.all_reduce and not self.group_name:
            raise ValueError("tensor parallel: world_size > 1 needs group_name (a torch.distributed group's name)")


def local_shape(shape: Qwen3Shape, world_size: int) -> Qwen3Shape:
    """The per-rank shape: heads, KV heads and the MLP width divided by the world size."""
    for name in ("heads", "kv_heads", "intermediate"):
        if getattr(shape, name) % world_size:
            raise ValueError(
                f"tensor parallel: {name}={getattr(shape, name)} is not divisible by world_size={world_size}; "
                "allowed world sizes divide heads, kv_heads and intermediate"
            )
    return Qwen3Shape(
        vocab=shape.vocab,
        hidden=shape.hidden,
        layers=shape.layers,
        heads=shape.heads // world_size,
        kv_heads=shape.kv_heads // world_size,
        head_dim=shape.head_dim,
        intermediate=shape.intermediate // world_size,
        tie_embeddings=shape.tie_embeddings,
        rope_theta=shape.rope_theta,
        eps=shape.eps,
    )


def all_reduce(x: torch.Tensor, group_name: str) -> torch.Tensor:
    """Sum over the group's ranks (functional collective: traceable by dynamo, runs eagerly too)."""
    reduced = torch.ops._c10d_functional.all_reduce(x, "sum", group_name)
    return torch.ops._c10d_functional.wait_tensor(reduced)


class TPQwen3Layer(Qwen3Layer):
    """A Qwen3 layer holding one rank's heads and MLP columns; all-reduces after o_proj and down_proj."""

    def __init__(self, shape: Qwen3Shape, index: int, parallel: TensorParallel) -> None:
        super().__init__(shape, index)
        self.parallel = parallel

    def reduce(self, partial: torch.Tensor) -> torch.Tensor:
        if self.parallel.world_size == 1 or not self.parallel.all_reduce:
            return partial
        assert self.parallel.group_name is not None
        return all_reduce(partial, self.parallel.group_name)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache_io: CacheIO) -> torch.Tensor:
        eps = self.shape.eps
        x = x + self.reduce(self.attention(rms_norm(x, self.input_norm, eps), cos, sin, cache_io))
        h = rms_norm(x, self.post_norm, eps)
        return x + self.reduce(self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)))


class TPPagedQwen3Decoder(PagedQwen3Decoder):
    """One rank's part of the paged decoder; same forward signature and pad values as `PagedQwen3Decoder`.

    `self.shape` is the per-rank shape (heads / W ...), `self.full_shape` the model's."""

    def __init__(
        self,
        shape: Qwen3Shape,
        num_blocks: int,
        block_size: int,
        max_blocks_per_seq: int,
        parallel: TensorParallel,
    ) -> None:
        layer = functools.partial(TPQwen3Layer, parallel=parallel)
        super().__init__(local_shape(shape, parallel.world_size), num_blocks, block_size, max_blocks_per_seq, layer)
        self.full_shape, self.parallel = shape, parallel

    @torch.no_grad()
    def fill_cache(self, seed: int) -> None:
        """Random KV in the whole cache (the prompts' KV), drawn at the full KV-head count and sliced like the
        weights, so every world size starts from the same cache."""
        world, rank = self.parallel.world_size, self.parallel.rank
        for layer in range(self.shape.layers):
            for kv in range(2):
                generator = _generator(seed, f"kv_cache.{layer}.{kv}", self.kv_cache.device)
                full = torch.empty(
                    (self.kv_cache.shape[2], self.full_shape.kv_heads, self.shape.head_dim),
                    device=self.kv_cache.device,
                )
                full.normal_(generator=generator)
                self.kv_cache[layer, kv].copy_(full.chunk(world, dim=1)[rank])


def _generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return generator


def _full_weight(name: str, full: Qwen3Shape, seed: int, device: torch.device) -> torch.Tensor:
    """The world-1 model's parameter `name`, float32: N(0, WEIGHT_STD) from its own generator; norms at 1."""
    q_size, kv_size = full.heads * full.head_dim, full.kv_heads * full.head_dim
    leaf = name.split(".")[-2] if name.endswith(".weight") else name.split(".")[-1]
    shapes = {
        "embed": (full.vocab, full.hidden),
        "lm_head": (full.vocab, full.hidden),
        "qkv_proj": (q_size + 2 * kv_size, full.hidden),
        "o_proj": (full.hidden, q_size),
        "gate_proj": (full.intermediate, full.hidden),
        "up_proj": (full.intermediate, full.hidden),
        "down_proj": (full.hidden, full.intermediate),
    }
    if "norm" in leaf:
        size = full.head_dim if leaf in ("q_norm", "k_norm") else full.hidden
        return torch.ones(size, device=device)
    weight = torch.empty(shapes[leaf], device=device)
    return weight.normal_(std=WEIGHT_STD, generator=_generator(seed, name, device))


def shard(name: str, weight: torch.Tensor, full: Qwen3Shape, parallel: TensorParallel) -> torch.Tensor:
    """Rank `parallel.rank`'s part of the world-1 parameter `name`."""
    world, rank = parallel.world_size, parallel.rank
    if world == 1:
        return weight
    if name.endswith("qkv_proj.weight"):
        q_size, kv_size = full.heads * full.head_dim, full.kv_heads * full.head_dim
        parts = weight.split([q_size, kv_size, kv_size], dim=0)
        return torch.cat([part.chunk(world, dim=0)[rank] for part in parts], dim=0)
    if name.endswith(("gate_proj.weight", "up_proj.weight")):
        return weight.chunk(world, dim=0)[rank]
    if name.endswith(("o_proj.weight", "down_proj.weight")):
        return weight.chunk(world, dim=1)[rank]
    return weight  # embeddings, norms, lm_head: replicated


def build_tp_paged_decoder(
    shape: Qwen3Shape | str,
    num_blocks: int,
    block_size: int,
    max_blocks_per_seq: int,
    parallel: TensorParallel,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> TPPagedQwen3Decoder:
    """This rank's decoder, weights drawn at full size from per-name generators on `device` and sliced."""
    shape = SHAPES[shape] if isinstance(shape, str) else shape
    device = torch.device(device)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in `dtype` directly: no float32 copy of an 8B model on the way
    try:
        with torch.device(device):
            model = TPPagedQwen3Decoder(shape, num_blocks, block_size, max_blocks_per_seq, parallel)
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            full = _full_weight(name, shape, seed, device)
            parameter.copy_(shard(name, full, shape, parallel))
            del full
    return inference_only(model, dtype)
