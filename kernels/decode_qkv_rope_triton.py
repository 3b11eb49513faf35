"""The CUDA (Triton) implementation of `ascend_graph::rms_norm_qkv_rope` (`kernels/decode_qkv_rope.py`): one
kernel, one program per head of the qkv output (Hq + 2 Hkv programs).

A program owns the D rows of its head's weight as two [D / 2, BLOCK_K] tiles, the first and the second half of the
head, and loops over K once with the M tokens in registers, as the decode GEMV does (`decode_triton_kernel.py`,
whose input RMSNorm prologue, streamed or exact, it reuses). Keeping the halves apart puts the pairs the rotation
mixes (i, i + D / 2) in the same place of two accumulators, so the epilogue needs no shuffle: it rounds the two
[M, D / 2] results to the dtype, normalises the head (the sum of squares of both halves, the q or the k norm weight
by the program's head), rotates them with cos / sin [M, D / 2] and stores. v heads skip the epilogue and store the
GEMV's output. No program waits for another and there is no second pass.

The grid is small: 32 programs at the Qwen3-0.6B site (Hq 16, Hkv 8), 48 at 8B, where the plain decode GEMV of
the same weight runs 128 to 384 row blocks; whether so few programs stream the weight as fast is not measured.
`kernels/decode_qkv_rope_split.py` holds a split-K variant (heads x splits programs, off: not registered) that
bench/decode_kernels.py times beside this kernel.

The KV-cache store (STORE_KV, a constexpr: off, the kernel compiles as before; `rms_norm_qkv_rope_kv_store`):
the programs of the k heads (after norm and rotation) and of the v heads also store their finished [M, D] rows
into one layer's paged cache, TRITON_ATTN's, logical [num_blocks, Hkv, block_size, 2 D]: token m at slot
s = slot_mapping[m] goes to [s // block_size, head, s % block_size, :D] (k) or [..., D:] (v), through the cache
tensor's own strides (vLLM lays it out HND or NHD, vllm 0.32 also heads outermost); tokens with s < 0 (padding)
and tokens past the slot mapping's length are stored nowhere, as vLLM's reshape-and-cache kernel does. The stored
values are the registers stored to the qkv output, so the cache holds bitwise what vLLM's write of that output
stores for kv_cache_dtype "auto" (a plain copy). Which vLLM configurations may use it is decided by the caller
(ascend_graph/vllm_plugin/decode_kv_cache.py); kernels/ imports no vLLM.

Calls the kernel does not take (more than MAX_TOKENS tokens, D / 2 not a power of two >= 16, a weight whose rows
are not contiguous, cos / sin with a strided last dimension) go to the reference; so does a call whose kernel
cannot be built here (logged once per reason). Runs on CPU tensors under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from . import decode_ops
from . import decode_qkv_rope as qkv_ops
from .decode_triton import BUILD_ERRORS, MAX_TOKENS, _rows, _warn_once, streams_norm
from .decode_triton_kernel import _dot_t, _row_rstd, _streamed_x_tile, _x_tile
from .decode_tuning import MIN_BLOCK, SHARED_BUDGET, DecodeConfig, GemvShape, default_config, stage_bytes


@triton.jit
def _round(value, dtype: tl.constexpr):
    """`value` rounded to `dtype` and back to float32 (what each op of the unfused graph does to its result)."""
    return value.to(dtype).to(tl.float32)


@triton.jit
def _norm_rope(first, second, pid, qn_ptr, kn_ptr, cos_ptr, sin_ptr, rows, m_mask, cos_stride, sin_stride, head_eps,
               HQ, HALF: tl.constexpr):  # fmt: skip
    """One head's halves (in the dtype) normalised by q_norm (heads < HQ) or k_norm, then rotated; rounded as
    rms_norm_rope's reference rounds."""
    dtype = first.dtype
    a = first.to(tl.float32)
    b = second.to(tl.float32)
    rstd = tl.rsqrt((tl.sum(a * a, axis=1) + tl.sum(b * b, axis=1)) / (2 * HALF) + head_eps)[:, None]
    halves = tl.arange(0, HALF)
    is_q = pid < HQ
    w_first = tl.where(is_q, tl.load(qn_ptr + halves), tl.load(kn_ptr + halves)).to(tl.float32)
    w_second = tl.where(is_q, tl.load(qn_ptr + HALF + halves), tl.load(kn_ptr + HALF + halves)).to(tl.float32)
    a = _round(_round(a * rstd, dtype) * w_first[None, :], dtype)
    b = _round(_round(b * rstd, dtype) * w_second[None, :], dtype)
    mask = m_mask[:, None]
    cos = tl.load(cos_ptr + rows[:, None] * cos_stride + halves[None, :], mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + rows[:, None] * sin_stride + halves[None, :], mask=mask, other=0.0).to(tl.float32)
    rotated_first = _round(a * cos, dtype) - _round(b * sin, dtype)
    rotated_second = _round(b * cos, dtype) + _round(a * sin, dtype)
    return rotated_first.to(dtype), rotated_second.to(dtype)


@triton.jit
def _store_kv(first, second, pid, cache_ptr, slot_ptr, rows, SLOTS, HQ, ROTATED_HEADS, cache_block_size,
              block_stride, head_stride, slot_stride, dim_stride, value_offset, HALF: tl.constexpr):  # fmt: skip
    """A k head's (pid in [HQ, ROTATED_HEADS)) or v head's rows stored where TRITON_ATTN's write puts them: token m
    (m < SLOTS) at slot s = slot_mapping[m] >= 0, in cache [blocks, Hkv, block_size, 2 D] (any strides) at
    [s // block_size, head, s % block_size, :D] for k, [..., D:] (value_offset further) for v."""
    is_value = pid >= ROTATED_HEADS
    head = tl.where(is_value, pid - ROTATED_HEADS, pid - HQ).to(tl.int64)
    slots = tl.load(slot_ptr + rows, mask=rows < SLOTS, other=-1).to(tl.int64)
    base = (
        cache_ptr
        + (slots // cache_block_size) * block_stride
        + (slots % cache_block_size) * slot_stride
        + head * head_stride
        + tl.where(is_value, value_offset, 0)
    )
    dims = tl.arange(0, HALF) * dim_stride
    mask = (slots >= 0)[:, None]  # a padded token (PAD_SLOT_ID, -1) is written nowhere
    tl.store(base[:, None] + dims[None, :], first, mask=mask)
    tl.store(base[:, None] + (dims + HALF * dim_stride)[None, :], second, mask=mask)


@triton.jit
def rms_norm_qkv_rope_kernel(
    x_ptr, res_ptr, nw_ptr, w_ptr, out_ptr, total_ptr, qn_ptr, kn_ptr, cos_ptr, sin_ptr, cache_ptr, slot_ptr,
    M, N, K, x_stride, res_stride, w_stride, cos_stride, sin_stride, eps, head_eps, HQ, ROTATED_HEADS,
    SLOTS, cache_block_size, block_stride, head_stride, slot_stride, dim_stride, value_offset,
    STREAM_NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr, FP32_SUM: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, HALF: tl.constexpr, BLOCK_K: tl.constexpr, STORE_KV: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    m_mask = rows < M
    cols = pid * (2 * HALF) + tl.arange(0, HALF)  # the head's first half; the second is HALF rows further
    rstd = tl.zeros((BLOCK_M,), tl.float32)
    if not STREAM_NORM:
        total_mask = rows < tl.where(pid == 0, M, 0)  # program 0 alone writes x + residual
        rstd = _row_rstd(
            x_ptr, res_ptr, total_ptr, rows, m_mask, K, x_stride, res_stride, eps, total_mask,
            HAS_RESIDUAL, FP32_SUM, BLOCK_M, BLOCK_K,
        )  # fmt: skip
    first_rows = w_ptr + cols.to(tl.int64)[:, None] * w_stride
    second_rows = w_ptr + (cols.to(tl.int64) + HALF)[:, None] * w_stride
    acc_first = tl.zeros((BLOCK_M, HALF), tl.float32)
    acc_second = tl.zeros((BLOCK_M, HALF), tl.float32)
    squares = tl.zeros((BLOCK_M,), tl.float32)
    row_one = tl.where(m_mask, 1.0, 0.0)  # see decode_linear_kernel
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        if STREAM_NORM:
            owned_rows = rows < tl.where((k0 // BLOCK_K) % tl.num_programs(0) == pid, M, 0)
            x, tile_squares = _streamed_x_tile(
                x_ptr, res_ptr, nw_ptr, total_ptr, rows, m_mask, ks, k_mask, K, x_stride, res_stride, owned_rows,
                row_one, HAS_RESIDUAL, FP32_SUM, False, False,
            )  # fmt: skip
            squares += tile_squares
        else:
            x = _x_tile(
                x_ptr, res_ptr, nw_ptr, rows, m_mask, ks, k_mask, x_stride, res_stride, rstd,
                True, HAS_RESIDUAL, FP32_SUM,
            )  # fmt: skip
        w_mask = k_mask[None, :]
        acc_first = _dot_t(x, tl.load(first_rows + ks[None, :], mask=w_mask, other=0.0), acc_first, IEEE)
        acc_second = _dot_t(x, tl.load(second_rows + ks[None, :], mask=w_mask, other=0.0), acc_second, IEEE)
    if STREAM_NORM:
        scale = tl.rsqrt(squares / K + eps)[:, None]
        acc_first = acc_first * scale
        acc_second = acc_second * scale
    dtype = out_ptr.dtype.element_ty
    first = acc_first.to(dtype)
    second = acc_second.to(dtype)
    if pid < ROTATED_HEADS:
        first, second = _norm_rope(
            first, second, pid, qn_ptr, kn_ptr, cos_ptr, sin_ptr, rows, m_mask, cos_stride, sin_stride, head_eps,
            HQ, HALF,
        )  # fmt: skip
    out = out_ptr + rows[:, None] * N + cols[None, :]
    mask = m_mask[:, None] & (cols < N)[None, :]
    tl.store(out, first, mask=mask)
    tl.store(out + HALF, second, mask=mask)
    if STORE_KV:
        if pid >= HQ:  # a k or a v head: its finished rows also go to the paged cache
            _store_kv(
                first, second, pid, cache_ptr, slot_ptr, rows, SLOTS, HQ, ROTATED_HEADS, cache_block_size,
                block_stride, head_stride, slot_stride, dim_stride, value_offset, HALF,
            )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class KVStore:
    """Where the kernel also stores its k and v heads: TRITON_ATTN's paged cache of one layer, logical shape
    [num_blocks, Hkv, block_size, 2 D] (k in the first D of the last dim, v in the second; its memory may be laid
    out otherwise, the kernel uses its strides), and the step's slot per token ([<= M] integers, < 0: padding)."""

    kv_cache: torch.Tensor
    slot_mapping: torch.Tensor


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """The cache's integer arguments of the kernel, in its order: the tokens that have a slot, the block size,
    the strides (in elements) of block, head, slot in block and head dim, and where v starts in the last dim."""

    slots: int
    block_size: int
    block_stride: int
    head_stride: int
    slot_stride: int
    dim_stride: int
    value_offset: int


def cache_layout(kv_cache: torch.Tensor, head_dim: int, slots: int = 0) -> CacheLayout:
    """The layout of a [num_blocks, Hkv, block_size, 2 D] cache, read from its own strides, as vLLM's
    `kv_cache.transpose(1, 2).split(D, dim=-1)` views it (TRITON_ATTN's do_kv_cache_update)."""
    blocks, heads, block, dim = kv_cache.stride()
    return CacheLayout(slots, kv_cache.shape[2], blocks, heads, block, dim, head_dim * dim)


def store_declines(x: torch.Tensor, num_kv_heads: int, head_dim: int, kv_store: KVStore) -> str | None:
    """Why the kernel cannot store into `kv_store` for these (checked) inputs, or None when it can: the cache
    [blocks, Hkv, block_size, 2 D] of x's dtype and device, a 1-d integer slot mapping of at most M tokens there,
    and tensors the kernel reaches (CUDA, or CPU under Triton's interpreter)."""
    cache, slots = kv_store.kv_cache, kv_store.slot_mapping
    if cache.dim() != 4 or cache.shape[1] != num_kv_heads or cache.shape[3] != 2 * head_dim or cache.shape[2] < 1:
        return f"cache {tuple(cache.shape)}: not [blocks, Hkv = {num_kv_heads}, block_size, 2 D = {2 * head_dim}]"
    if cache.dtype != x.dtype or cache.device != x.device:
        return f"cache {cache.dtype} on {cache.device}, not the activations' {x.dtype} on {x.device}"
    if slots.dim() != 1 or slots.shape[0] > x.shape[0] or slots.dtype not in (torch.int32, torch.int64):
        return f"slot mapping {slots.dtype} {tuple(slots.shape)}: not [<= {x.shape[0]} tokens] of int32 / int64"
    if slots.device != x.device:
        return f"slot mapping on {slots.device}, the activations on {x.device}"
    if not (x.is_cuda or isinstance(rms_norm_qkv_rope_kernel, InterpretedFunction)):
        return f"{x.device.type} tensors and no Triton interpreter (TRITON_INTERPRET=1)"
    return None


def qkv_rope_config(x: torch.Tensor, weight: torch.Tensor, half: int, residual: bool) -> DecodeConfig:
    """The decode GEMV's default for the same stream (two weight row blocks a program, the norm prologue), with
    block_n the half head and as many pipeline stages as fit the shared-memory budget."""
    shape = GemvShape(weight.shape[0] // 2, x.shape[-1], x.shape[0], 2, 2 if residual else 1, x.element_size(), True)
    config = dataclasses.replace(default_config(shape), block_n=half)
    stages = config.num_stages
    while stages > 1 and stages * stage_bytes(shape, half, config.block_k) > SHARED_BUDGET:
        stages -= 1
    return dataclasses.replace(config, num_stages=stages)


def launch_buffers(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, half: int, kv_store: KVStore | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, CacheLayout]:
    """What both qkv_rope kernels (this one, decode_qkv_rope_split.py's) take besides the inputs: (out, total, the
    residual or x in its place, cache, slot mapping, the cache's layout; the last three unused unless STORE_KV)."""
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    total = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    res = residual if residual is not None else x
    if kv_store is None:
        return out, total, res, out, out, CacheLayout(0, 0, 0, 0, 0, 1, 0)
    cache, slots = kv_store.kv_cache, kv_store.slot_mapping
    return out, total, res, cache, slots, cache_layout(cache, 2 * half, slots.shape[0])


def launch(
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
    config: DecodeConfig | None = None,
    kv_store: KVStore | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel on checked, kernel-ready tensors (see `takes`); with `kv_store` (see `store_declines`) the k
    and v heads also go to its cache."""
    half = q_norm.shape[0] // 2
    config = config or qkv_rope_config(x, weight, half, residual is not None)
    out, total, res, cache, slots, layout = launch_buffers(x, residual, weight, half, kv_store)
    tokens, k = x.shape
    rms_norm_qkv_rope_kernel[(num_q_heads + 2 * num_kv_heads,)](
        x, res, norm_weight, weight, out, total, q_norm, k_norm, cos, sin, cache, slots,
        tokens, weight.shape[0], k, x.stride(0), res.stride(0), weight.stride(0), cos.stride(0), sin.stride(0),
        eps, head_eps, num_q_heads, num_q_heads + num_kv_heads, *dataclasses.astuple(layout),
        STREAM_NORM=streams_norm(x.dtype, exact_rounding), HAS_RESIDUAL=residual is not None, FP32_SUM=fp32_sum,
        IEEE=x.dtype == torch.float32, BLOCK_M=max(MIN_BLOCK, triton.next_power_of_2(tokens)), HALF=half,
        BLOCK_K=min(config.block_k, max(16, triton.next_power_of_2(k))), STORE_KV=kv_store is not None,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return out, total


def takes(x: torch.Tensor, residual: torch.Tensor | None, norm_weight: torch.Tensor, weight: torch.Tensor,
          q_norm: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:  # fmt: skip
    """Whether the kernel takes these (checked) tensors, else the reference runs."""
    half = q_norm.shape[0] // 2
    return (
        0 < x.shape[0] <= MAX_TOKENS
        and x.shape[1] > 0
        and half >= MIN_BLOCK
        and half & (half - 1) == 0
        and weight.stride(1) == 1
        and _rows(x) is not None
        and (residual is None or (residual.shape == x.shape and _rows(residual) is not None))
        and norm_weight.shape == x.shape[-1:]
        and norm_weight.is_contiguous()
        and all(t.stride(-1) == 1 for t in (cos, sin))
    )


def rms_norm_qkv_rope_cuda(
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
    """The op's CUDA implementation: the kernel where `takes` says so, else the reference."""
    args = (x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, num_q_heads, num_kv_heads,
            fp32_sum, exact_rounding)  # fmt: skip
    qkv_ops.check_qkv_rope(x, weight, q_norm, k_norm, cos, sin, num_q_heads, num_kv_heads)
    if not takes(x, residual, norm_weight, weight, q_norm, cos, sin):
        return qkv_ops.rms_norm_qkv_rope_reference(*args)  # also raises the named error on bad input
    decode_ops.check_linear(qkv_ops.OP, x, weight, residual, norm_weight)
    try:
        return launch(*args[:5], q_norm.contiguous(), k_norm.contiguous(), *args[7:])
    except BUILD_ERRORS as error:
        _warn_once(f"{qkv_ops.OP} weight {tuple(weight.shape)}, {x.dtype}: {type(error).__name__}: {error}")
        return qkv_ops.rms_norm_qkv_rope_reference(*args)


def rms_norm_qkv_rope_kv_store(
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
    fp32_sum: bool,
    exact_rounding: bool,
    kv_store: KVStore,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(qkv, total) as `rms_norm_qkv_rope_cuda` computes them, the k and v heads also stored into `kv_store`, in
    one kernel; None (nothing computed, nothing stored; the reason logged once) where the kernel does not take the
    call, so the caller runs its reference."""
    head_dim = qkv_ops.check_qkv_rope(x, weight, q_norm, k_norm, cos, sin, num_q_heads, num_kv_heads)
    decode_ops.check_linear(qkv_ops.OP, x, weight, residual, norm_weight)
    reason = store_declines(x, num_kv_heads, head_dim, kv_store)
    if reason is None and not takes(x, residual, norm_weight, weight, q_norm, cos, sin):
        reason = f"the qkv kernel does not take x {tuple(x.shape)}, weight {tuple(weight.shape)}, D {head_dim}"
    if reason is not None:
        _warn_once(f"{qkv_ops.OP} with the KV-cache store: {reason}")
        return None
    try:
        return launch(
            x, residual, norm_weight, eps, weight, q_norm.contiguous(), k_norm.contiguous(), head_eps, cos, sin,
            num_q_heads, num_kv_heads, fp32_sum, exact_rounding, kv_store=kv_store,
        )  # fmt: skip
    except BUILD_ERRORS as error:
        _warn_once(f"{qkv_ops.OP} with the KV-cache store, {x.dtype}: {type(error).__name__}: {error}")
        return None


def register() -> None:
    """Make the Triton kernel the CUDA implementation of rms_norm_qkv_rope."""
    qkv_ops.rms_norm_qkv_rope.register_kernel("cuda")(rms_norm_qkv_rope_cuda)
