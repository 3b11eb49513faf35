"""The split-K variant of `rms_norm_qkv_rope`'s Triton kernel (kernels/decode_qkv_rope_split.py) on the CPU through
Triton's interpreter: equal to the reference within the single-pass kernel's own tolerances (test_decode_linear's
`tolerance`: the reference's F.linear sums in another order than either kernel, so the split's different float32
order is inside the bound the single pass already needs), at 1, 3 and 8 tokens, float32 and bfloat16, every
residual / norm variant, with K split four ways (the last split a masked tail); the workspace and tickets zero after
every call and a second call bitwise the first; the KV-cache store writes the kernel's own k and v rows. Broken
variants (the last ticket one early, no reset) fail the same checks. The interpreter runs the programs one after
another: memory ordering between concurrent programs is not tested here, nor any speed."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.test_decode_linear import run_interpreted

CHECKS = """
from ascend_graph.kernels import decode_qkv_rope_split as split
from ascend_graph.kernels import decode_qkv_rope_triton as single
from ascend_graph.kernels.decode_tuning import DecodeConfig
from tests.kernels.test_decode_linear import assert_close
from tests.kernels.test_decode_qkv_rope import qkv_rope_cases

CONFIG = DecodeConfig(16, 32, 4, 1)  # K = 100 in four 32-wide splits, the last one masked


def run(case, **faults):
    args = list(case.args)
    args[5], args[6] = args[5].contiguous(), args[6].contiguous()
    return split.launch_split(*args, CONFIG, splits=4, **faults)


def workspaces_clear():
    return all(not w.sums.any() and not w.tickets.any() for w in split.WORKSPACES._kept.values())


def check_split(shapes, tokens, **faults):
    checked = 0
    for dtype in (torch.float32, torch.bfloat16):
        for hidden, head_dim, q_heads, kv_heads in shapes:
            for count in tokens:
                for case in qkv_rope_cases("cpu", dtype, hidden, head_dim, q_heads, kv_heads, count):
                    got = run(case, **faults)
                    assert_close(got, case.reference(*case.args), dtype, case.name, case.streamed)
                    assert workspaces_clear(), case.name
                    again = run(case, **faults)
                    assert all(torch.equal(a, b) for a, b in zip(got, again)), case.name
                    checked += 1
    return checked


def check_store(tokens, **faults):
    # a contiguous [blocks, Hkv, block_size, 2 D] cache; slots in several blocks, the last token padding
    hidden, head_dim, q_heads, kv_heads = 100, 32, 3, 2
    for dtype in (torch.float32, torch.bfloat16):
        for count in tokens:
            case = qkv_rope_cases("cpu", dtype, hidden, head_dim, q_heads, kv_heads, count)[1]
            cache = torch.zeros(4, kv_heads, 16, 2 * head_dim, dtype=dtype)
            slots = (torch.arange(count) * 17 + 3) % 64
            if count >= 3:
                slots[-1] = -1
            args = list(case.args)
            args[5], args[6] = args[5].contiguous(), args[6].contiguous()
            out, _ = split.launch_split(*args, CONFIG, single.KVStore(cache, slots), 4, **faults)
            assert_close(out, case.reference(*case.args)[0], dtype, case.name)
            expected = torch.zeros_like(cache)
            heads = out.view(count, -1, head_dim)
            for m, slot in enumerate(slots.tolist()):
                if slot >= 0:
                    keys, values = heads[m, q_heads : q_heads + kv_heads], heads[m, q_heads + kv_heads :]
                    expected[slot // 16, :, slot % 16] = torch.cat((keys, values), dim=-1)
            assert torch.equal(cache, expected), (dtype, count)
            assert workspaces_clear()
    return len(tokens) * 2


torch.manual_seed(0)
"""


@pytest.mark.slow  # 40 s on the 2-core lane
def test_split_kernel_equals_the_reference_and_leaves_its_workspace_zero() -> None:
    # head dims 32 and 64 (half 16, 32): 3 and 5 heads; every variant of qkv_rope_cases, 2 dtypes, 3 token counts
    check = CHECKS + 'print("checked", check_split([(100, 32, 1, 1), (100, 64, 3, 1)], [1, 3, 8]))'
    assert "checked 72" in run_interpreted(check)


def test_split_kernel_stores_its_own_k_and_v_rows_into_the_cache() -> None:
    assert "stored 6" in run_interpreted(CHECKS + 'print("stored", check_store([1, 3, 8]))')


@pytest.mark.parametrize(
    "fault",
    [
        "last_ticket=2",  # the third program of a head finishes with the fourth split's partial sums missing
        "reset=False",  # the second call adds onto the first's sums and never draws the last ticket again
    ],
)
def test_broken_split_variants_are_caught(fault: str) -> None:
    check = (
        CHECKS
        + f"""
for name, call in (("maths", lambda: check_split([(100, 32, 1, 1)], [3], {fault})),
                   ("store", lambda: check_store([3], {fault}))):
    try:
        call()
    except AssertionError:
        print("caught", name)
"""
    )
    found = run_interpreted(check)
    assert "caught maths" in found and "caught store" in found, found


def test_split_count_covers_the_sms_with_whole_k_tiles() -> None:
    pytest.importorskip("triton")
    from ascend_graph.kernels.decode_qkv_rope_split import split_count

    for heads, k, block_k in ((48, 4096, 128), (32, 1024, 128), (5, 100, 32), (300, 4096, 128)):
        splits, chunk = split_count(heads, k, block_k)
        assert chunk % block_k == 0 and (splits - 1) * chunk < k <= splits * chunk, (heads, k, splits, chunk)
    assert split_count(48, 4096, 128) == (6, 768)  # 288 programs over 132 SMs
    assert split_count(300, 4096, 128)[0] == 1  # enough heads: the single pass's grid


@pytest.mark.slow
@pytest.mark.parametrize("tokens", [1, 8, 32])
@pytest.mark.parametrize("hidden", [1024, 4096])
def test_split_kernel_compiles_for_hopper_without_spills(hidden: int, tokens: int) -> None:
    """The Qwen3-0.6B / 8B qkv sites (head_dim 128), streamed and exact norm, with the KV-cache store, compiled for
    sm_90 here: no register spills, shared memory within a block's limit."""
    pytest.importorskip("triton")
    from ascend_graph.kernels.decode_qkv_rope_triton import qkv_rope_config
    from ascend_graph.kernels.decode_resources import qkv_rope_hopper_resources

    from tests.kernels.test_decode_linear import HOPPER_SHARED

    x = torch.empty(tokens, hidden, dtype=torch.bfloat16, device="meta")
    weight = torch.empty(4096 if hidden == 1024 else 6144, hidden, dtype=torch.bfloat16, device="meta")
    config = qkv_rope_config(x, weight, 64, residual=True)
    for stream in (True, False):
        flags = {"STREAM_NORM": stream, "HAS_RESIDUAL": True, "FP32_SUM": True, "IEEE": False, "STORE_KV": True,
                 "RESET": True}  # fmt: skip
        found = qkv_rope_hopper_resources(tokens, hidden, 64, flags, config, split=True)
        assert found.stack == 0 and found.registers < 255 and found.shared <= HOPPER_SHARED, (flags, found)


def check_qkv_rope_bench_variants(device: str) -> int:
    """bench/decode_kernels.py's attention-front variants compute the same thing: the one-kernel and the split-K
    kernels equal the stock sequence within the streamed bfloat16 bound (test_decode_linear's)."""
    from bench import decode_kernels as bench
    from tests.kernels.test_decode_linear import assert_close

    bench.DEVICE, bench.ROTATION_BYTES = device, 1
    site = bench.Site("m", "qkv", 4 * 32, 96)  # 2 q heads, 1 kv head of 32; K = 96
    weights = bench.make_weights(site)
    variants = bench.qkv_rope_variants(site, bench.make_inputs(site, 3, weights), heads=(2, 1, 32))
    assert sorted(variants) == ["qkv_rope_single", "qkv_rope_split", "qkv_rope_stock"], sorted(variants)
    expected = variants["qkv_rope_stock"].call(weights[0])
    for name in ("qkv_rope_single", "qkv_rope_split"):
        assert_close(variants[name].call(weights[0])[0], expected, torch.bfloat16, name, streamed=True)
    assert not bench.qkv_rope_variants(bench.Site("m", "qkv", 96, 64), bench.make_inputs(site, 3, weights))
    return len(variants)


def test_the_bench_compares_the_attention_front_like_with_like() -> None:
    check = (
        CHECKS
        + """
from tests.kernels.test_decode_qkv_rope_split import check_qkv_rope_bench_variants
print("variants", check_qkv_rope_bench_variants("cpu"))
"""
    )
    assert "variants 3" in run_interpreted(check)
