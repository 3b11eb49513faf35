"""The Triton kernel of the decode linear ops (`kernels/decode_ops.py`); `kernels/decode_triton.py` launches it.

One kernel serves all of them, its prologue and epilogue picked by compile-time flags. Each program owns
`BLOCK_N` output columns (weight rows; for gate-up, the same columns of the gate and of the up half, so each x
slice is loaded once for both) and loops over K once: it loads a [BLOCK_N, BLOCK_K] tile of the weight per step,
the [M, BLOCK_K] slice of x beside it, and accumulates x @ tile^T in float32 on the tensor cores (tokens padded to
BLOCK_M >= 16; the padding is never loaded). Every weight element is read once; there is no split-K.

RMSNorm prologue, two forms (NORM; STREAM_NORM picks):
- streamed (the default where the dtype allows): RMSNorm(s) * nw = (s * nw) * rstd with rstd = rsqrt(mean(s^2) +
  eps) one scalar per token, so W @ (RMSNorm(s) * nw) = rstd * (W @ (s * nw)). Each K step loads the slice of s =
  x (+ residual), feeds (s * nw) rounded to the dtype to the tensor cores and adds the slice's squares to a
  per-token sum; the epilogue scales the accumulator by rstd. No program reads x before it starts on the weight,
  and x is read once per program, not twice. Each K slice of s is stored by one program (round-robin). The
  rounding differs from the unfused graph's: it rounds s * nw once where the graph rounds s * rstd and then its
  product with nw (same size of error, see the tests).
- exact: each program first walks x (and the residual) once to get every token's rstd, then normalises each x
  slice as it loads it, rounded exactly as the unfused graph rounds. Program 0 alone writes x + residual.
SiLU-mul epilogue: gate and up accumulators rounded to the dtype (as F.linear's output is), then silu(gate)
rounded, then the product. Residual epilogue: the accumulator rounded to the dtype, plus the residual, rounded.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _x_tile(
    x_ptr,
    res_ptr,
    nw_ptr,
    rows,
    m_mask,
    ks,
    k_mask,
    x_stride,
    res_stride,
    rstd,
    NORM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
):
    """The [BLOCK_M, BLOCK_K] slice of the GEMV's input, normalised when NORM (by the rstd of the exact path's
    first pass, rounded as the unfused graph rounds), in x's dtype."""
    mask = m_mask[:, None] & k_mask[None, :]
    x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :], mask=mask, other=0.0)
    if NORM:
        base = x.to(tl.float32)
        if HAS_RESIDUAL:
            res = tl.load(res_ptr + rows[:, None] * res_stride + ks[None, :], mask=mask, other=0.0)
            base = base + res.to(tl.float32)
            if not FP32_SUM:
                base = base.to(x.dtype).to(tl.float32)
        nw = tl.load(nw_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
        normed = (base * rstd[:, None]).to(x.dtype).to(tl.float32)
        x = (normed * nw[None, :]).to(x.dtype)
    return x


@triton.jit
def _streamed_x_tile(
    x_ptr,
    res_ptr,
    nw_ptr,
    total_ptr,
    rows,
    m_mask,
    ks,
    k_mask,
    K,
    x_stride,
    res_stride,
    owned_rows,
    row_one,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
    SQUARES_2D: tl.constexpr,
    NW_TILE: tl.constexpr,
):
    """The streamed norm's slice: ((x + residual) * norm_weight in x's dtype, the slice's squares: their sum per
    token, or with SQUARES_2D the [BLOCK_M, BLOCK_K] squares themselves, for the caller to add elementwise and
    reduce once after the K loop); the programs scale by rstd in the epilogue. The slice's owner (`owned_rows`: all
    M rows there, none elsewhere) stores x + residual. `row_one`: see decode_linear_kernel.

    NW_TILE loads the norm weight once per token row, as a [BLOCK_M, BLOCK_K] tile shaped like x's (0 on the
    padding rows, where x is 0 too): a [BLOCK_K] vector gets Triton's own 1-D layout, which at BLOCK_K 256 and 8
    warps is one bf16 per thread, too small for cp.async, so that load was not pipelined but waited for in every
    K step, then converted to x's layout through shared memory (Triton 3.9, sm_90, compiled here; the tile is
    pipelined like x). It costs a tile of shared memory per stage."""
    mask = m_mask[:, None] & k_mask[None, :]
    x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :], mask=mask, other=0.0)
    base = x.to(tl.float32)
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + rows[:, None] * res_stride + ks[None, :], mask=mask, other=0.0)
        base = base + res.to(tl.float32)
        if not FP32_SUM:
            base = base.to(x.dtype).to(tl.float32)
    tl.store(total_ptr + rows[:, None] * K + ks[None, :], base.to(x.dtype), mask=mask & owned_rows[:, None])
    if NW_TILE:
        nw = tl.load(nw_ptr + ks[None, :] + 0 * rows[:, None], mask=mask, other=0.0).to(tl.float32)
    else:
        nw = tl.load(nw_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)[None, :]
    squares = base * base
    if not SQUARES_2D:
        squares = tl.sum(squares, axis=1)
    return (base * row_one[:, None] * nw).to(x.dtype), squares


@triton.jit
def _row_rstd(
    x_ptr,
    res_ptr,
    total_ptr,
    rows,
    m_mask,
    K,
    x_stride,
    res_stride,
    eps,
    total_mask,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The exact path's first pass: rsqrt(mean((x + residual)^2) + eps) per token; also stores x + residual
    ([M, K], packed) for the rows of `total_mask`."""
    squares = tl.zeros((BLOCK_M,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        mask = m_mask[:, None] & (ks < K)[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :], mask=mask, other=0.0)
        base = x.to(tl.float32)
        if HAS_RESIDUAL:
            res = tl.load(res_ptr + rows[:, None] * res_stride + ks[None, :], mask=mask, other=0.0)
            base = base + res.to(tl.float32)
        rounded = base.to(x.dtype)
        if HAS_RESIDUAL and not FP32_SUM:
            base = rounded.to(tl.float32)
        tl.store(total_ptr + rows[:, None] * K + ks[None, :], rounded, mask=mask & total_mask[:, None])
        squares += tl.sum(base * base, axis=1)
    return tl.rsqrt(squares / K + eps)


@triton.jit
def _dot_t(x, w, acc, IEEE: tl.constexpr):
    """acc + x @ w^T; float32 inputs multiply in full precision (Triton's default for them is tf32)."""
    if IEEE:
        acc = tl.dot(x, tl.trans(w), acc, input_precision="ieee")
    else:
        acc = tl.dot(x, tl.trans(w), acc)
    return acc


@triton.jit
def _store_output(
    acc,
    acc_up,
    out_ptr,
    add_ptr,
    rows,
    m_mask,
    cols,
    n_mask,
    N,
    add_stride,
    SILU_MUL: tl.constexpr,
    ADD_OUT: tl.constexpr,
):
    """The epilogue, rounded as the unfused graph rounds: the GEMV's output to the dtype, then SiLU-mul (silu
    rounded before the product) or the residual add."""
    dtype = out_ptr.dtype.element_ty
    result = acc.to(dtype)
    if SILU_MUL:
        gate = result.to(tl.float32)
        silu = (gate * tl.sigmoid(gate)).to(dtype).to(tl.float32)
        result = (silu * acc_up.to(dtype).to(tl.float32)).to(dtype)
    out_mask = m_mask[:, None] & n_mask[None, :]
    if ADD_OUT:
        add = tl.load(add_ptr + rows[:, None] * add_stride + cols[None, :], mask=out_mask, other=0.0)
        result = (result.to(tl.float32) + add.to(tl.float32)).to(dtype)
    tl.store(out_ptr + rows[:, None] * N + cols[None, :], result, mask=out_mask)


@triton.jit
def decode_linear_kernel(
    x_ptr,
    res_ptr,
    nw_ptr,
    w_ptr,
    out_ptr,
    total_ptr,
    add_ptr,
    M,
    N,
    K,
    x_stride,
    res_stride,
    w_stride,
    add_stride,
    up_offset,
    eps,
    NORM: tl.constexpr,
    STREAM_NORM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    FP32_SUM: tl.constexpr,
    SILU_MUL: tl.constexpr,
    ADD_OUT: tl.constexpr,
    IEEE: tl.constexpr,
    SQUARES_2D: tl.constexpr,
    NW_TILE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    m_mask = rows < M
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = cols < N
    rstd = tl.zeros((BLOCK_M,), tl.float32)
    if NORM and not STREAM_NORM:
        # Only program 0 writes x + residual; the others compute the same rstd and store nothing.
        total_mask = rows < tl.where(pid == 0, M, 0)
        rstd = _row_rstd(
            x_ptr, res_ptr, total_ptr, rows, m_mask, K, x_stride, res_stride, eps, total_mask,
            HAS_RESIDUAL, FP32_SUM, BLOCK_M, BLOCK_K,
        )  # fmt: skip
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * w_stride
    # The up half's rows, `up_offset` (= I) rows further (no .to() on the argument: Triton makes an int argument
    # equal to 1 a compile-time constant).
    up_rows = w_ptr + (cols.to(tl.int64) + up_offset)[:, None] * w_stride
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    if SQUARES_2D:  # the streamed norm's squares, added elementwise per K step, reduced after the loop
        squares = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    else:
        squares = tl.zeros((BLOCK_M,), tl.float32)
    # 1 per token row (0 on the padding, which is 0 anyway). Multiplying the streamed slice by it changes no value
    # but keeps Triton from hoisting the conversion to the tensor-core operand layout above the norm's
    # arithmetic: hoisted, every warp computed the whole [BLOCK_M, BLOCK_K] slice in float32 (that layout
    # replicates A across the warps) beside the copy the store and the squares use: 240-255 registers at 8 warps,
    # 96-128 without it (Triton 3.6, sm_90, compiled here; see NORM_BLOCK_K in kernels/decode_tuning.py).
    row_one = tl.where(m_mask, 1.0, 0.0)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        if STREAM_NORM:
            # Each K slice of x + residual is stored once, by one program (round-robin over the grid): no
            # program stores more than its share, none waits for another.
            owned_rows = rows < tl.where((k0 // BLOCK_K) % tl.num_programs(0) == pid, M, 0)
            x, tile_squares = _streamed_x_tile(
                x_ptr, res_ptr, nw_ptr, total_ptr, rows, m_mask, ks, k_mask, K, x_stride, res_stride, owned_rows,
                row_one, HAS_RESIDUAL, FP32_SUM, SQUARES_2D, NW_TILE,
            )  # fmt: skip
            squares += tile_squares
        else:
            x = _x_tile(
                x_ptr, res_ptr, nw_ptr, rows, m_mask, ks, k_mask, x_stride, res_stride, rstd,
                NORM, HAS_RESIDUAL, FP32_SUM,
            )  # fmt: skip
        w_mask = n_mask[:, None] & k_mask[None, :]
        acc = _dot_t(x, tl.load(w_rows + ks[None, :], mask=w_mask, other=0.0), acc, IEEE)
        if SILU_MUL:
            acc_up = _dot_t(x, tl.load(up_rows + ks[None, :], mask=w_mask, other=0.0), acc_up, IEEE)
    if STREAM_NORM:
        # W @ (RMSNorm(s) * nw) = rstd * (W @ (s * nw)): rstd is a per-token scalar.
        if SQUARES_2D:
            row_squares = tl.sum(squares, axis=1)
        else:
            row_squares = squares
        scale = tl.rsqrt(row_squares / K + eps)[:, None]
        acc = acc * scale
        acc_up = acc_up * scale
    _store_output(acc, acc_up, out_ptr, add_ptr, rows, m_mask, cols, n_mask, N, add_stride, SILU_MUL, ADD_OUT)
