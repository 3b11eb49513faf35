"""Block sizes of the decode GEMV kernel (`kernels/decode_triton.py`), per GEMV shape, with Hopper defaults.

Why these defaults (H100 / H200, 132 SMs, ~3.35 / 4.8 TB/s): a decode GEMV is a stream of the weight, so what
counts is enough bytes in flight on every SM, read in 16-byte coalesced pieces. A program reads a
[block_n, block_k] tile of the weight per step (two for gate-up: the gate rows and the up rows; block_k = 256 bf16
= 512 bytes of each row: 32 threads x 16 bytes) and keeps `num_stages` tiles in flight (Triton's software
pipelining of the K loop). Beside the weight tile every program also reads the [tokens, block_k] slice of x (and
of the residual, when the RMSNorm prologue adds it): from L2, since all programs read the same x, but that traffic
grows with the tokens and with the number of programs, and at 32 tokens with a residual it was four times the
weight's (16-row tiles; f534d05's H100 figures: the 8B qkv site three times slower than at one token). Hence:

- block_n: first, the largest (<= 64) that still gives about two programs per SM (a GEMV over N = 1024 rows has 64
  programs of 16 rows each: fewer SMs stream, the price of having no split-K second pass); then doubled while the
  x side of a step has more than twice the weight side's rows (`X_ROWS_PER_WEIGHT_ROW`) and the grid still covers
  7/8 of the SMs (halving the x traffic is worth a few idle SMs: the 0.6B qkv site at 32 tokens, 128 programs of
  32 rows).
- block_k: 256 (512 bytes of a bf16 row), 128 with the RMSNorm prologue (`NORM_BLOCK_K`: registers).
- num_warps: 8 where a step's weight tile or its x side reaches 64 x 256 elements, or with the RMSNorm prologue
  (a thread's share of the tile stays at a few 16-byte loads and the x slice's float32 values fit its registers),
  else 4.
- num_stages: 3 where the K loop runs more than once, fewer when three stages of tiles would not fit the shared
  memory budget (`SHARED_BUDGET`, below Hopper's 227 KB a block, leaving Triton room for its layout conversions).

The tile's M side is the tokens padded to 16 (the smallest tensor-core tile); the padding is never loaded and costs
compute, which a memory-bound kernel has to spare. None of these rules was measured one by one: the H100 figures
say only which whole configurations won or lost (docs/results.md).

`TUNED` holds configurations measured best by `bench/decode_kernels.py --autotune` on a device, keyed by the
shape's `bucket()`; it starts empty (nothing has been measured in this tree yet) and `config_for` falls back to the
defaults. A configuration found there is meant to be copied into `TUNED` with the JSON it came from named beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

HOPPER_SMS = 132
MIN_BLOCK = 16  # the tensor-core tile's smallest side in Triton's tl.dot
MAX_BLOCK_N = 64
MAX_BLOCK_K = 256
# The RMSNorm prologue holds the x (and residual) slice as float32 in registers: 128-wide K tiles and 8 warps keep it
# at 64-111 registers a thread at 1-32 tokens (compiled for sm_90 by Triton 3.6: 256-wide with 4 warps took 124-255).
NORM_BLOCK_K = 128
WIDE_TILE = 64 * 256  # elements of a step's tile from which 8 warps share it
# x rows per weight row of a step that f534d05 saw cost nothing: its plain GEMVs at 32 tokens on 16-row tiles ran
# as fast as at one token (the 8B qkv weight: 21.2 against 20.8 us).
X_ROWS_PER_WEIGHT_ROW = 2
SHARED_BUDGET = 192 << 10  # bytes of pipelined tiles a program may hold (f534d05 ran 192 KB on the H100)


def _next_power_of_two(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()


@dataclass(frozen=True)
class GemvShape:
    """What a launch's block sizes depend on.

    n: output columns the programs split (for gate-up, I: each column reads a gate row and an up row, so
    `rows_per_column` is 2); k: the reduction length; tokens: M; x_inputs: the [tokens, k] tensors each program
    streams beside the weight (2 when the RMSNorm prologue adds a residual); element_size: bytes per element;
    norm: whether the K loop also normalises x (the RMSNorm prologue).
    """

    n: int
    k: int
    tokens: int = 1
    rows_per_column: int = 1
    x_inputs: int = 1
    element_size: int = 2
    norm: bool = False

    def __post_init__(self) -> None:
        for name in ("n", "k", "tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"GemvShape.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rows_per_column", "x_inputs"):
            if getattr(self, name) not in (1, 2):
                raise ValueError(f"GemvShape.{name} must be 1 or 2, got {getattr(self, name)}")
        if self.element_size not in (2, 4):
            raise ValueError(f"GemvShape.element_size must be 2 or 4, got {self.element_size}")

    @property
    def block_m(self) -> int:
        """The tokens padded to a tensor-core tile side: the kernel's BLOCK_M."""
        return max(MIN_BLOCK, _next_power_of_two(self.tokens))

    def bucket(self) -> GemvShape:
        """The `TUNED` key: this shape with its tokens rounded up to a power of two."""
        return replace(self, tokens=_next_power_of_two(self.tokens))


@dataclass(frozen=True)
class DecodeConfig:
    """One launch configuration of the decode GEMV kernel.

    Two switches of the streamed RMSNorm prologue's K loop (ignored without it), off by default, variants for the
    device to measure (issue 26; unmeasured so far, see `NORM_VARIANTS`): squares_2d adds each step's squares
    elementwise into a [BLOCK_M, BLOCK_K] float32 tile reduced once after the loop, instead of a per-token sum
    (warp shuffles) in every step; nw_tile loads the norm weight as a tile shaped like x's slice, which keeps that
    load pipelined where Triton's layout for the [BLOCK_K] vector would not (decode_triton_kernel._streamed_x_tile).
    """

    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3
    squares_2d: bool = False
    nw_tile: bool = False

    def __post_init__(self) -> None:
        for name in ("block_n", "block_k"):
            value = getattr(self, name)
            if value < MIN_BLOCK or value & (value - 1):
                raise ValueError(f"DecodeConfig.{name} must be a power of two >= {MIN_BLOCK}, got {value}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"DecodeConfig.num_warps must be one of 1, 2, 4, 8, 16, got {self.num_warps}")
        if not 1 <= self.num_stages <= 8:
            raise ValueError(f"DecodeConfig.num_stages must be in 1..8, got {self.num_stages}")


# Measured configurations, GemvShape.bucket() -> DecodeConfig; see the module docstring.
TUNED: Mapping[GemvShape, DecodeConfig] = MappingProxyType({})


def _power_of_two_at_most(value: int, cap: int) -> int:
    block = MIN_BLOCK
    while block * 2 <= min(value, cap):
        block *= 2
    return block


def _programs(n: int, block_n: int) -> int:
    return -(-n // block_n)


def _block_n(shape: GemvShape, sms: int) -> int:
    block_n = MAX_BLOCK_N
    while block_n > MIN_BLOCK and _programs(shape.n, block_n) < 2 * sms:
        block_n //= 2
    x_rows = shape.tokens * shape.x_inputs
    while (
        block_n < MAX_BLOCK_N
        and x_rows > X_ROWS_PER_WEIGHT_ROW * block_n * shape.rows_per_column
        and _programs(shape.n, 2 * block_n) >= sms - sms // 8
    ):
        block_n *= 2
    return block_n


def stage_bytes(shape: GemvShape, block_n: int, block_k: int) -> int:
    """Shared memory of one pipeline stage: the weight tile(s) and the x side's slices."""
    rows = block_n * shape.rows_per_column + shape.block_m * shape.x_inputs
    return rows * block_k * shape.element_size


def _warps(shape: GemvShape, block_n: int, block_k: int) -> int:
    wide = max(block_n * shape.rows_per_column, shape.block_m * shape.x_inputs) * block_k >= WIDE_TILE
    return 8 if wide or shape.norm else 4


def _block_k(shape: GemvShape) -> int:
    return _power_of_two_at_most(shape.k, NORM_BLOCK_K if shape.norm else MAX_BLOCK_K)


def _stages(shape: GemvShape, block_n: int, block_k: int, wanted: int = 3) -> int:
    if shape.k <= block_k:
        return 1
    stages = wanted
    while stages > 1 and stages * stage_bytes(shape, block_n, block_k) > SHARED_BUDGET:
        stages -= 1
    return stages


def default_config(shape: GemvShape, sms: int = HOPPER_SMS) -> DecodeConfig:
    """The Hopper defaults of the module docstring for this shape."""
    block_n = _block_n(shape, sms)
    block_k = _block_k(shape)
    return DecodeConfig(block_n, block_k, _warps(shape, block_n, block_k), _stages(shape, block_n, block_k))


def config_for(shape: GemvShape, table: Mapping[GemvShape, DecodeConfig] = TUNED) -> DecodeConfig:
    """The measured configuration of this shape's bucket if `table` has one, else the Hopper default."""
    return table.get(shape.bucket()) or default_config(shape)


def autotune_candidates(shape: GemvShape) -> list[DecodeConfig]:
    """The few configurations `bench/decode_kernels.py --autotune` tries for one shape, the default first: each
    costs a compilation, so the set is small (row blocks x K blocks, the default one stage deeper and with the
    other warp count, and for the streamed norm its `NORM_VARIANTS`), and none over the shared-memory budget."""
    default = default_config(shape)
    other_warps = 4 if default.num_warps == 8 else 8
    candidates = [default, replace(default, num_warps=other_warps)]
    if (
        default.num_stages > 1
        and (default.num_stages + 1) * stage_bytes(shape, default.block_n, default.block_k) <= SHARED_BUDGET
    ):
        candidates.append(replace(default, num_stages=default.num_stages + 1))
    for block_n in (16, 32, 64):
        for block_k in (128, 256):
            if block_k > max(MIN_BLOCK, shape.k):
                continue
            config = DecodeConfig(block_n, block_k, _warps(shape, block_n, block_k), _stages(shape, block_n, block_k))
            if shape.norm and block_k == MAX_BLOCK_K:  # else the norm weight's load is not pipelined (NORM_VARIANTS)
                config = replace(config, nw_tile=True)
                config = replace(config, num_stages=_nw_tile_stages(shape, config))
            if config not in candidates:
                candidates.append(config)
    variants = [norm_variant_config(shape, variant) for variant in NORM_VARIANTS] if shape.norm else []
    candidates += [config for config in variants if config is not None and config not in candidates]
    return candidates


# Variants of the streamed-norm configuration that its compiled sm_90 code suggested (issue 26,
# docs/decode-norm-prologue.md), for bench/decode_kernels.py to time beside the default and for --autotune to try;
# none is measured yet. Compiled by Triton 3.9 and 3.6 (the H100 lane's), the default norm loop (BLOCK_K 128, 8 warps)
# has the plain GEMV's loop structure (every load cp.async-pipelined, two barriers a step, no shared-memory
# reduction: the per-token sum is four warp shuffles) at half its K width: twice the steps, half the weight bytes
# in flight. The H100 figures fit a cost per step that does not depend on its bytes (8B qkv at one token: plain 16
# steps of 8 KB in 20.0 us, norm 32 steps of 4 KB in 42.4 us; 8B gate-up's norm, 32 steps of 16 KB: 71.1 us, the
# plain GEMV's time).
# - sq2d: the default with squares_2d (the shuffles leave the loop; 0-30 more registers, no spills).
# - stages4: the default one stage deeper (three weight tiles in flight instead of two).
# - k256, k256w4: 256-wide K steps (half the steps) at 8 and 4 warps, with nw_tile (without it the 8-warp loop
#   waits every step for an unpipelined norm-weight load) and squares_2d, at one token only: that is the
#   combination ptxas compiled without spills at all four Qwen3 sites under both Tritons (100-226 registers);
#   without squares_2d, or at 8 tokens, it spilled 16-24 bytes at some of them (Triton 3.9), at 32 tokens at all.
NORM_VARIANTS = ("sq2d", "stages4", "k256", "k256w4")


def norm_variant_config(shape: GemvShape, variant: str) -> DecodeConfig | None:
    """The configuration of one of `NORM_VARIANTS` for a streamed-norm shape, or None where it does not apply (no
    K loop to pipeline deeper, more than one token or K < 256 for the 256-wide ones, stages over the budget)."""
    if variant not in NORM_VARIANTS:
        raise ValueError(f"norm variant must be one of {NORM_VARIANTS}, got {variant!r}")
    default = default_config(shape)
    if variant == "sq2d":
        return replace(default, squares_2d=True)
    if variant == "stages4":
        fits = 4 * stage_bytes(shape, default.block_n, default.block_k) <= SHARED_BUDGET
        return replace(default, num_stages=4) if default.num_stages > 1 and fits else None
    if shape.k < MAX_BLOCK_K or shape.tokens > 1:
        return None
    warps = 8 if variant == "k256" else 4
    wide = replace(default, block_k=MAX_BLOCK_K, num_warps=warps, squares_2d=True, nw_tile=True)
    return replace(wide, num_stages=_nw_tile_stages(shape, wide))


def _nw_tile_stages(shape: GemvShape, config: DecodeConfig) -> int:
    """`config`'s stages, fewer where they would not fit the budget with the norm weight's tile in each."""
    nw_tile_bytes = shape.block_m * config.block_k * shape.element_size
    stages = config.num_stages
    while stages > 1 and stages * (stage_bytes(shape, config.block_n, config.block_k) + nw_tile_bytes) > SHARED_BUDGET:
        stages -= 1
    return stages
