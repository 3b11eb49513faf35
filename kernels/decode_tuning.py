"""Block sizes of the decode GEMV kernels (`kernels/decode_triton.py`), per weight shape, with Hopper defaults.

Why these defaults (H100 / H200, 132 SMs, ~3.35 / 4.8 TB/s): a decode GEMV is a stream of the weight, so what
counts is enough bytes in flight on every SM, read in 16-byte coalesced pieces. A program reads a
[block_n, block_k] tile of the weight per step (block_k = 256 bf16 = 512 bytes of each row: 32 threads x 16 bytes)
and keeps `num_stages` tiles in flight (Triton's software pipelining of the K loop). block_n is chosen so that the
grid has at least about two programs per SM where N allows it (a GEMV over N = 1024 rows has 64 programs at 16
rows each: fewer SMs stream, the price of having no split-K second pass). The tile's M side is the tokens padded
to 16 (the smallest tensor-core tile); the padding costs compute, which a memory-bound kernel has to spare.

`TUNED` holds configurations measured best by `bench/decode_kernels.py --autotune` on a device, keyed by
(N, K); it starts empty (nothing has been measured in this tree yet) and `config_for` falls back to the defaults.
A configuration found there is meant to be copied into `TUNED` with the JSON it came from named beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

HOPPER_SMS = 132
MIN_BLOCK = 16  # the tensor-core tile's smallest side in Triton's tl.dot


@dataclass(frozen=True)
class DecodeConfig:
    """One launch configuration of the decode GEMV kernel."""

    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_n", "block_k"):
            value = getattr(self, name)
            if value < MIN_BLOCK or value & (value - 1):
                raise ValueError(f"DecodeConfig.{name} must be a power of two >= {MIN_BLOCK}, got {value}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"DecodeConfig.num_warps must be one of 1, 2, 4, 8, 16, got {self.num_warps}")
        if not 1 <= self.num_stages <= 8:
            raise ValueError(f"DecodeConfig.num_stages must be in 1..8, got {self.num_stages}")


# Measured configurations, (N, K) -> DecodeConfig; see the module docstring.
TUNED: Mapping[tuple[int, int], DecodeConfig] = MappingProxyType({})


def _power_of_two_at_most(value: int, cap: int) -> int:
    block = MIN_BLOCK
    while block * 2 <= min(value, cap):
        block *= 2
    return block


def default_config(n: int, k: int, sms: int = HOPPER_SMS) -> DecodeConfig:
    """Hopper defaults for an [n, k] weight (n: the output rows each program splits; for gate-up, I)."""
    block_n = 64
    while block_n > MIN_BLOCK and -(-n // block_n) < 2 * sms:
        block_n //= 2
    block_k = _power_of_two_at_most(k, 256)
    # Wide tiles (64 x 256) need 8 warps to keep each thread's share of the tile at 16-byte loads in flight.
    num_warps = 8 if block_n * block_k >= 64 * 256 else 4
    return DecodeConfig(block_n=block_n, block_k=block_k, num_warps=num_warps, num_stages=3 if k > block_k else 1)


def config_for(n: int, k: int, table: Mapping[tuple[int, int], DecodeConfig] = TUNED) -> DecodeConfig:
    """The measured configuration of this shape if `table` has one, else the Hopper default."""
    return table.get((n, k)) or default_config(n, k)


def autotune_candidates(n: int, k: int) -> list[DecodeConfig]:
    """The few configurations `bench/decode_kernels.py --autotune` tries for one shape, the default first: each
    costs a compilation, so the set is small (row blocks x K blocks, and the default one stage deeper)."""
    default = default_config(n, k)
    candidates = [default, DecodeConfig(default.block_n, default.block_k, default.num_warps, default.num_stages + 1)]
    for block_n in (16, 32, 64):
        for block_k in (128, 256):
            if block_k > max(MIN_BLOCK, k):
                continue
            config = DecodeConfig(block_n, block_k, 8 if block_n * block_k >= 64 * 256 else 4, 3)
            if config not in candidates:
                candidates.append(config)
    return candidates
