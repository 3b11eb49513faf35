"""A split-K variant of `rms_norm_qkv_rope`'s Triton kernel (`kernels/decode_qkv_rope_triton.py`), off by default:
the same op, with each head's K loop spread over SPLITS programs so that the grid is heads x SPLITS programs
instead of one per head (48 at the Qwen3-8B site: most of an H100's 132 SMs idle while the weight streams).

Program (h, s) runs the single-pass kernel's K loop over its chunk of K only (CHUNK, a multiple of BLOCK_K), into
the same two [M, D / 2] float32 accumulators, and adds them atomically into a float32 workspace [heads, 32, D]
(`tl.atomic_add`). A CTA barrier then makes every thread's adds precede the program's ticket: an acq_rel atomic
add on the head's counter. The program that draws the last ticket (SPLITS - 1) sees every other program's adds
(their tickets' release, its acquire); it reads the head's full sums (bypassing L1), resets the head's workspace
rows and counter to zero, and runs the single-pass kernel's epilogue unchanged: the streamed norm's scale, the
rounding to the dtype, q / k norm and rotation, the store, the KV-cache store. The others end after their ticket.
Because the last program leaves both zero, the next call (a CUDA graph replay too) needs no memset; calls that
share a workspace must be ordered on one stream (two streams running the op at once would mix their sums).

The input norm: in the exact path every program runs the single-pass kernel's first pass over all of K, as every
program of the single pass does (x + residual is [M, K], read from L2). In the streamed path the sum of squares is
over all of K but a program's loop sees only its chunk; the last program sums the squares again over all of K, in
the single pass's tile order, before it scales. That costs it one more read of x (and the residual) on its serial
path, instead of a second atomic workspace written by every program, and keeps the squares bitwise the single
pass's and the same run to run. Program (0, s) stores x + residual for its chunk.

Rounding: the GEMV's float32 sums are added chunk by chunk in whatever order the programs' atomics reach memory,
so the float32 sum (and, where that moves a value across a rounding boundary, the dtype result and everything the
epilogue derives from it) can differ from the single pass's and from run to run in the last bits. The tests hold
it to the single pass's own tolerances against the reference (whose F.linear sums in yet another order). The
interpreter runs the programs one after another, so it checks the maths, the ticket and the reset, not the memory
ordering between concurrent programs: that is reasoned here (seen in the sm_90 PTX of Triton 3.9: relaxed
`red.global.gpu.add.v4.f32` adds, `bar.sync`, an `atom.global.gpu.acq_rel.add` ticket, `ld.global.cg` reads) and
untested on a GPU (tests/kernels/test_decode_qkv_rope_split_cuda.py will), as is any speed.

The workspace and counters are allocated once per (device, heads, head dim) and kept (`SplitWorkspaces`). An
allocation made while a CUDA graph is being captured would be recorded, not run (its zeros never written before
the first replay), so a call that finds none while capturing does not allocate: it runs the single-pass kernel
(logged once). Run the op once before capture (vLLM's warm-up does) or call `SplitWorkspaces.get` to have it.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from . import decode_ops
from . import decode_qkv_rope as qkv_ops
from . import decode_qkv_rope_triton as single
from .decode_triton import BUILD_ERRORS, MAX_TOKENS, _warn_once, streams_norm
from .decode_triton_kernel import _dot_t, _row_rstd, _streamed_x_tile, _x_tile
from .decode_tuning import HOPPER_SMS, MIN_BLOCK, DecodeConfig

PROGRAMS_PER_SM = 2  # the grid the split count aims at, as the decode GEMV's block_n rule does


@triton.jit
def _squares(x_ptr, res_ptr, rows, m_mask, K, x_stride, res_stride, HAS_RESIDUAL: tl.constexpr,
             FP32_SUM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """The streamed norm's sum of squares of x + residual over all of K, tile by tile as the single pass sums."""
    squares = tl.zeros((BLOCK_M,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        mask = m_mask[:, None] & (ks < K)[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :], mask=mask, other=0.0)
        base = x.to(tl.float32)
        if HAS_RESIDUAL:
            res = tl.load(res_ptr + rows[:, None] * res_stride + ks[None, :], mask=mask, other=0.0)
            base = base + res.to(tl.float32)
            if not FP32_SUM:
                base = base.to(x.dtype).to(tl.float32)
        squares += tl.sum(base * base, axis=1)
    return squares


@triton.jit
def rms_norm_qkv_rope_split_kernel(
    x_ptr, res_ptr, nw_ptr, w_ptr, out_ptr, total_ptr, qn_ptr, kn_ptr, cos_ptr, sin_ptr, cache_ptr, slot_ptr,
    ws_ptr, count_ptr,
    M, N, K, x_stride, res_stride, w_stride, cos_stride, sin_stride, eps, head_eps, HQ, ROTATED_HEADS,
    SLOTS, cache_block_size, block_stride, head_stride, slot_stride, dim_stride, value_offset,
    ws_head_stride, CHUNK, LAST_TICKET,
    STREAM_NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr, FP32_SUM: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, HALF: tl.constexpr, BLOCK_K: tl.constexpr, STORE_KV: tl.constexpr, RESET: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    split = tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    m_mask = rows < M
    cols = pid * (2 * HALF) + tl.arange(0, HALF)
    rstd = tl.zeros((BLOCK_M,), tl.float32)
    if not STREAM_NORM:
        total_mask = rows < tl.where((pid == 0) & (split == 0), M, 0)
        rstd = _row_rstd(
            x_ptr, res_ptr, total_ptr, rows, m_mask, K, x_stride, res_stride, eps, total_mask,
            HAS_RESIDUAL, FP32_SUM, BLOCK_M, BLOCK_K,
        )  # fmt: skip
    first_rows = w_ptr + cols.to(tl.int64)[:, None] * w_stride
    second_rows = w_ptr + (cols.to(tl.int64) + HALF)[:, None] * w_stride
    acc_first = tl.zeros((BLOCK_M, HALF), tl.float32)
    acc_second = tl.zeros((BLOCK_M, HALF), tl.float32)
    row_one = tl.where(m_mask, 1.0, 0.0)
    owned_rows = rows < tl.where(pid == 0, M, 0)  # head 0's programs store x + residual, each for its chunk
    k_start = split * CHUNK
    for k0 in range(k_start, tl.minimum(k_start + CHUNK, K), BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        if STREAM_NORM:
            x, _ = _streamed_x_tile(
                x_ptr, res_ptr, nw_ptr, total_ptr, rows, m_mask, ks, k_mask, K, x_stride, res_stride, owned_rows,
                row_one, HAS_RESIDUAL, FP32_SUM, False, False,
            )  # fmt: skip
        else:
            x = _x_tile(
                x_ptr, res_ptr, nw_ptr, rows, m_mask, ks, k_mask, x_stride, res_stride, rstd,
                True, HAS_RESIDUAL, FP32_SUM,
            )  # fmt: skip
        w_mask = k_mask[None, :]
        acc_first = _dot_t(x, tl.load(first_rows + ks[None, :], mask=w_mask, other=0.0), acc_first, IEEE)
        acc_second = _dot_t(x, tl.load(second_rows + ks[None, :], mask=w_mask, other=0.0), acc_second, IEEE)
    halves = tl.arange(0, HALF)
    ws_first = ws_ptr + pid * ws_head_stride + rows[:, None] * (2 * HALF) + halves[None, :]
    mask = m_mask[:, None]
    tl.atomic_add(ws_first, acc_first, mask=mask, sem="relaxed")
    tl.atomic_add(ws_first + HALF, acc_second, mask=mask, sem="relaxed")
    tl.debug_barrier()  # every thread's adds before the ticket, whose release publishes them
    ticket = tl.atomic_add(count_ptr + pid, 1, sem="acq_rel")
    if ticket == LAST_TICKET:
        acc_first = tl.load(ws_first, mask=mask, other=0.0, cache_modifier=".cg")
        acc_second = tl.load(ws_first + HALF, mask=mask, other=0.0, cache_modifier=".cg")
        if RESET:  # for the next call: no program of this head touches them again in this one
            tl.store(ws_first, tl.zeros((BLOCK_M, HALF), tl.float32), mask=mask)
            tl.store(ws_first + HALF, tl.zeros((BLOCK_M, HALF), tl.float32), mask=mask)
            tl.atomic_xchg(count_ptr + pid, 0)
        if STREAM_NORM:
            squares = _squares(
                x_ptr, res_ptr, rows, m_mask, K, x_stride, res_stride, HAS_RESIDUAL, FP32_SUM, BLOCK_M, BLOCK_K
            )
            scale = tl.rsqrt(squares / K + eps)[:, None]
            acc_first = acc_first * scale
            acc_second = acc_second * scale
        dtype = out_ptr.dtype.element_ty
        first = acc_first.to(dtype)
        second = acc_second.to(dtype)
        if pid < ROTATED_HEADS:
            first, second = single._norm_rope(
                first, second, pid, qn_ptr, kn_ptr, cos_ptr, sin_ptr, rows, m_mask, cos_stride, sin_stride,
                head_eps, HQ, HALF,
            )  # fmt: skip
        out = out_ptr + rows[:, None] * N + cols[None, :]
        out_mask = m_mask[:, None] & (cols < N)[None, :]
        tl.store(out, first, mask=out_mask)
        tl.store(out + HALF, second, mask=out_mask)
        if STORE_KV:
            if pid >= HQ:
                single._store_kv(
                    first, second, pid, cache_ptr, slot_ptr, rows, SLOTS, HQ, ROTATED_HEADS, cache_block_size,
                    block_stride, head_stride, slot_stride, dim_stride, value_offset, HALF,
                )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Workspace:
    """One (device, heads, head dim)'s float32 partial sums [heads, MAX_TOKENS, D] and int32 tickets [heads]; both
    zero between calls (the kernel's last program of each head resets its head's)."""

    sums: torch.Tensor
    tickets: torch.Tensor


class SplitWorkspaces:
    """The workspaces, allocated on first use and kept; see the module docstring on CUDA graph capture."""

    def __init__(self) -> None:
        self._kept: dict[tuple[torch.device, int, int], Workspace] = {}

    def get(self, device: torch.device, heads: int, head_dim: int) -> Workspace:
        """The workspace for these, allocated (zeroed) now if there is none yet."""
        key = (device, heads, head_dim)
        if key not in self._kept:
            sums = torch.zeros((heads, MAX_TOKENS, head_dim), dtype=torch.float32, device=device)
            self._kept[key] = Workspace(sums, torch.zeros(heads, dtype=torch.int32, device=device))
        return self._kept[key]

    def has(self, device: torch.device, heads: int, head_dim: int) -> bool:
        return (device, heads, head_dim) in self._kept


WORKSPACES = SplitWorkspaces()


def split_count(heads: int, k: int, block_k: int, sms: int = HOPPER_SMS) -> tuple[int, int]:
    """(SPLITS, CHUNK): about PROGRAMS_PER_SM programs an SM over heads x SPLITS, each chunk a whole number of K
    tiles (at least one), no split without a tile."""
    tiles = triton.cdiv(k, block_k)
    wanted = max(1, min(tiles, triton.cdiv(PROGRAMS_PER_SM * sms, heads)))
    chunk = triton.cdiv(tiles, wanted) * block_k
    return triton.cdiv(k, chunk), chunk


def launch_split(
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
    kv_store: single.KVStore | None = None,
    splits: int | None = None,
    *,
    last_ticket: int | None = None,
    reset: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`single.launch` with the split-K kernel on checked, kernel-ready tensors (`single.takes`); `splits` (None:
    `split_count`'s) is rounded so that each split has whole K tiles. `last_ticket` and `reset` are there for the
    tests' broken variants only (the finishing program one ticket early, no reset)."""
    half = q_norm.shape[0] // 2
    heads = num_q_heads + 2 * num_kv_heads
    config = config or single.qkv_rope_config(x, weight, half, residual is not None)
    tokens, k = x.shape
    block_k = min(config.block_k, max(16, triton.next_power_of_2(k)))
    if splits is None:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else HOPPER_SMS
        splits, chunk = split_count(heads, k, block_k, sms)
    else:
        chunk = triton.cdiv(triton.cdiv(k, block_k), splits) * block_k
        splits = triton.cdiv(k, chunk)
    workspace = WORKSPACES.get(x.device, heads, 2 * half)
    out, total, res, cache, slots, layout = single.launch_buffers(x, residual, weight, half, kv_store)
    rms_norm_qkv_rope_split_kernel[(heads, splits)](
        x, res, norm_weight, weight, out, total, q_norm, k_norm, cos, sin, cache, slots,
        workspace.sums, workspace.tickets,
        tokens, weight.shape[0], k, x.stride(0), res.stride(0), weight.stride(0), cos.stride(0), sin.stride(0),
        eps, head_eps, num_q_heads, num_q_heads + num_kv_heads, *dataclasses.astuple(layout),
        workspace.sums.stride(0), chunk, splits - 1 if last_ticket is None else last_ticket,
        STREAM_NORM=streams_norm(x.dtype, exact_rounding), HAS_RESIDUAL=residual is not None, FP32_SUM=fp32_sum,
        IEEE=x.dtype == torch.float32, BLOCK_M=max(MIN_BLOCK, triton.next_power_of_2(tokens)), HALF=half,
        BLOCK_K=block_k, STORE_KV=kv_store is not None, RESET=reset,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return out, total


def _capturing_without_workspace(x: torch.Tensor, heads: int, head_dim: int) -> bool:
    if not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
        return False
    if WORKSPACES.has(x.device, heads, head_dim):
        return False
    _warn_once(f"{qkv_ops.OP} split-K: no workspace for {heads} heads of {head_dim} before capture, single pass")
    return True


def rms_norm_qkv_rope_split(
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
    splits: int | None = None,
    config: DecodeConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`rms_norm_qkv_rope_cuda` with the split-K kernel: the reference where the kernel does not take the call,
    the single-pass kernel while capturing without a workspace."""
    args = (x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, num_q_heads, num_kv_heads,
            fp32_sum, exact_rounding)  # fmt: skip
    head_dim = qkv_ops.check_qkv_rope(x, weight, q_norm, k_norm, cos, sin, num_q_heads, num_kv_heads)
    if not single.takes(x, residual, norm_weight, weight, q_norm, cos, sin):
        return qkv_ops.rms_norm_qkv_rope_reference(*args)
    if _capturing_without_workspace(x, num_q_heads + 2 * num_kv_heads, head_dim):
        return single.rms_norm_qkv_rope_cuda(*args)
    decode_ops.check_linear(qkv_ops.OP, x, weight, residual, norm_weight)
    try:
        return launch_split(*args[:5], q_norm.contiguous(), k_norm.contiguous(), *args[7:], config, splits=splits)
    except BUILD_ERRORS as error:
        _warn_once(f"{qkv_ops.OP} split-K weight {tuple(weight.shape)}, {x.dtype}: {type(error).__name__}: {error}")
        return qkv_ops.rms_norm_qkv_rope_reference(*args)
