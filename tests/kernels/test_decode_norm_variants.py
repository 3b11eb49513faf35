"""The streamed-norm variants of kernels/decode_tuning.py's NORM_VARIANTS (issue 26): the same maths as the default
under Triton's interpreter over a K loop of several steps with a masked tail, and, compiled for sm_90 here, no
spills and a K loop whose every load is pipelined. Nothing here says whether a variant is faster: only the device
can (bench/decode_kernels.py times them beside the default)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from ascend_graph.kernels import decode_ops
from ascend_graph.kernels.decode_tuning import NORM_VARIANTS, DecodeConfig, GemvShape, norm_variant_config

from tests.kernels.test_decode_linear import assert_close, run_interpreted


def variant_configs(shape: GemvShape) -> dict[str, DecodeConfig]:
    """Every variant that applies to `shape`, plus the 256-wide one without its norm-weight tile."""
    found = {name: norm_variant_config(shape, name) for name in NORM_VARIANTS}
    configs = {name: config for name, config in found.items() if config is not None}
    if "k256" in configs:
        configs["k256_vector_nw"] = replace(configs["k256"], nw_tile=False)
    return configs


def check_norm_variants(device: str) -> int:
    """Each variant's rms_norm_linear (streamed norm, with and without residual and SiLU-mul) equals the reference
    at the default's tolerance, and its x + residual output equals the reference's exactly. K = 600: the 256-wide
    loop runs three steps, the 128-wide five, each with a masked tail; 1 and 3 tokens."""
    from ascend_graph.kernels import decode_triton as dt

    checked = 0
    for dtype in (torch.float32, torch.bfloat16):
        for tokens in (1, 3):
            torch.manual_seed(tokens)
            hidden, out, inter = 600, 48, 24
            x = torch.randn(tokens, hidden, device=device).to(dtype)
            residual = torch.randn(tokens, hidden, device=device).to(dtype)
            norm_weight = (1 + 0.1 * torch.randn(hidden, device=device)).to(dtype)
            for silu, has_residual in ((False, True), (True, True), (False, False)):
                rows = 2 * inter if silu else out
                weight = (torch.randn(rows, hidden, device=device) * hidden**-0.5).to(dtype)
                res = residual if has_residual else None
                shape = dt.gemv_shape(x, weight, residual=res, norm=True, silu_mul=silu)
                expected = decode_ops.rms_norm_linear_reference(x, res, norm_weight, 1e-6, weight, True, silu, False)
                for name, config in variant_configs(shape).items():
                    got = dt.launch(x, weight, residual=res, norm_weight=norm_weight, eps=1e-6, fp32_sum=True,
                                    silu_mul=silu, config=config)  # fmt: skip
                    label = f"{name} {dtype} tokens={tokens} silu={silu} residual={has_residual}"
                    assert_close(got[0], expected[0], dtype, label, streamed=True)
                    assert torch.equal(got[1], expected[1]), label
                    checked += 1
    return checked


def test_norm_variants_compute_the_default_maths_under_the_interpreter() -> None:
    check = """
from tests.kernels.test_decode_norm_variants import check_norm_variants
print("checked", check_norm_variants("cpu"))
"""
    # Per dtype: 1 token, 3 sites x 5 configs (sq2d, stages4, k256, k256w4, k256 without the nw tile); 3 tokens,
    # 3 sites x 2 (the 256-wide ones are for one token).
    assert "checked 42" in run_interpreted(check)


def test_norm_variants_apply_where_they_compiled_clean() -> None:
    one, many = GemvShape(6144, 4096, 1, 1, 2, norm=True), GemvShape(6144, 4096, 32, 1, 2, norm=True)
    assert norm_variant_config(one, "k256") == DecodeConfig(16, 256, 8, 3, squares_2d=True, nw_tile=True)
    assert norm_variant_config(many, "k256") is None and norm_variant_config(many, "sq2d").squares_2d
    assert norm_variant_config(GemvShape(64, 64, 1, norm=True), "stages4") is None  # one K step: no pipeline
    with pytest.raises(ValueError, match="norm variant must be one of"):
        norm_variant_config(one, "k512")


SITES = [(4096, 1024, False), (3072, 1024, True), (6144, 4096, False), (12288, 4096, True)]  # Qwen3 0.6B, 8B


@pytest.mark.slow
@pytest.mark.parametrize("tokens", [1, 32])
@pytest.mark.parametrize(("n", "k", "silu"), SITES)
def test_norm_variants_compile_for_hopper_pipelined_without_spills(n: int, k: int, silu: bool, tokens: int) -> None:
    """Compiled for sm_90 here (no GPU): no spills, shared memory within a block's limit, every load of the K loop
    pipelined; squares_2d takes the reduction out of the loop. The 256-wide loop at 8 warps without the norm-weight
    tile waits for that load every step (the reason for nw_tile; if a Triton update pipelines it, this says so)."""
    pytest.importorskip("triton")
    from ascend_graph.kernels.decode_resources import hopper_k_loop, hopper_resources
    from ascend_graph.kernels.decode_triton import kernel_flags

    shape = GemvShape(n, k, tokens, 2 if silu else 1, 2, norm=True)
    flags = kernel_flags(torch.bfloat16, norm=True, residual=True, fp32_sum=True, silu_mul=silu)
    for name, config in variant_configs(shape).items():
        loop = hopper_k_loop(shape, flags, config)
        if name == "k256_vector_nw":
            assert loop.waited_loads == 1 and loop.layout_conversions == 1, loop
            continue
        found = hopper_resources(shape, flags, config)
        assert found.stack == 0 and found.registers < 255 and found.shared <= 227 << 10, (name, found)
        assert loop.waited_loads == 0 and loop.layout_conversions == 0, (name, loop)
        assert loop.reductions == (0 if config.squares_2d else 1), (name, loop)
