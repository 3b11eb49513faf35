"""The fusion passes on the graphs dynamo gives for the Qwen3-style decoder and a transformers Qwen3ForCausalLM:
op counts before/after each pass, outputs equal to eager on fresh random inputs, graphs without the patterns
left unchanged, and the passes selected through the backend's options."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from ascend_graph.passes import PASS_NAMES, apply_passes
from ascend_graph.passes.aten_graph import count_ops, op_histogram, to_aten

import ascend_graph

from ..helpers import compile_recording, poison_outputs
from ..models import hf_qwen3, mlp, qwen3

# float32: the fused ops' CPU implementation runs the same torch ops as the unfused graph, so only summation
# order inside a kernel may differ. bfloat16: two units in the last place of values around 1.
TOLERANCES = {torch.float32: {"atol": 1e-5, "rtol": 1e-4}, torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2}}
LAYERS = 2  # the tiny shape


def _dynamo_graph(model: Any, *args: Any, **kwargs: Any) -> tuple[torch.fx.GraphModule, list[Any]]:
    """The FX graph and example inputs dynamo hands a backend for `model(*args)`."""
    graphs: list[tuple[torch.fx.GraphModule, list[Any]]] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        graphs.append((gm, example_inputs))
        return gm.forward

    with torch.no_grad():
        torch.compile(model, backend=backend, dynamic=True)(*args, **kwargs)
    assert len(graphs) == 1, f"expected one graph, dynamo gave {len(graphs)}"
    return graphs[0]


def _decoder_inputs(batch: int, vocab: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, vocab, (batch,)), torch.randint(0, 40, (batch,))


def _histogram_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    ops = set(before) | set(after)
    return {op: after.get(op, 0) - before.get(op, 0) for op in ops if after.get(op, 0) != before.get(op, 0)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_pass_replaces_exactly_its_ops(dtype: torch.dtype) -> None:
    model = qwen3("cpu").to(dtype)
    gm, example_inputs = _dynamo_graph(model, *_decoder_inputs(4))
    with torch.no_grad():
        before = op_histogram(to_aten(gm, example_inputs))
        results = {name: apply_passes(gm, example_inputs, [name]) for name in PASS_NAMES}
    deltas = {name: _histogram_delta(before, op_histogram(passed)) for name, (passed, _) in results.items()}
    # QK-norm + RoPE: per layer two (q and k) norm+rotation chains -> two fused ops.
    rope = deltas["qk_norm_rope"]
    assert rope["ascend_graph.rms_norm_rope.default"] == 2 * LAYERS
    assert rope["aten.cat.default"] == -2 * LAYERS and rope["aten.rsqrt.default"] == -2 * LAYERS
    # add + RMSNorm: the post-attention norm of each layer, the next layer's input norm and the final norm; the
    # first layer's input norm has no add before it, nor have the QK-norms (fused alone when qk_norm_rope is off).
    norms = deltas["add_rms_norm"]
    assert norms["ascend_graph.add_rms_norm.default"] == 2 * LAYERS
    assert norms["ascend_graph.rms_norm.default"] == 1 + 2 * LAYERS
    assert norms["aten.rsqrt.default"] == -(2 * LAYERS + 1) - 2 * LAYERS  # the QK-norms go too, as lone norms
    assert deltas["silu_and_mul"] == {
        "ascend_graph.silu_and_mul.default": LAYERS,
        "aten.silu.default": -LAYERS,
        "aten.mul.Tensor": -LAYERS,
    }
    noop = results["noop_elimination"][1]
    assert noop.replaced["noop_elimination"] > 0 and noop.ops_after < noop.ops_before, noop
    everything = apply_passes(gm, example_inputs, PASS_NAMES)[1]
    # decode_gemv runs before add_rms_norm and takes the norms that feed one linear: per layer the input norm +
    # qkv and the o, gate, up and down GEMVs, then the final norm + lm_head; the post-attention norm feeds two
    # linears (gate and up are separate here), so add_rms_norm keeps it.
    assert everything.replaced == {
        "noop_elimination": noop.replaced["noop_elimination"],
        "qk_norm_rope": 2 * LAYERS,
        "decode_gemv": 5 * LAYERS + 1,
        "add_rms_norm": LAYERS,
        "silu_and_mul": LAYERS,
    }
    assert everything.ops_after < everything.ops_before // 2 + 20, everything


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lowering", ["aten", pytest.param("inductor", marks=pytest.mark.slow)])
def test_decoder_with_all_passes_equals_eager(dtype: torch.dtype, lowering: str) -> None:
    model = qwen3("cpu").to(dtype)
    compiled, pieces = compile_recording(
        model, capture_sizes=[2, 4, 8], passes=list(PASS_NAMES), lowering=lowering, pad_values=model.pad_values
    )
    with torch.no_grad():
        for batch in (4, 3, 8, 2, 5):
            ids, positions = _decoder_inputs(batch)
            expected = model(ids, positions)  # eager writes the same cache entries the graph then rewrites
            poison_outputs(pieces)
            torch.testing.assert_close(compiled(ids, positions), expected, **TOLERANCES[dtype])
    report = pieces[0].pass_report
    assert report is not None and report.replaced["silu_and_mul"] == LAYERS, report
    assert ascend_graph.counters()["replays"] == 5


def test_transformers_qwen3_is_fused_and_equals_eager() -> None:
    model = hf_qwen3("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 8], passes="all")
    with torch.no_grad():
        for batch in (4, 3, 8):
            ids = torch.randint(0, 256, (batch, 6))
            poison_outputs(pieces)
            torch.testing.assert_close(
                compiled(input_ids=ids).logits, model(input_ids=ids).logits, **TOLERANCES[torch.float32]
            )
    report = pieces[0].pass_report
    assert report is not None
    # transformers normalises (batch, seq, heads, head_dim), transposes, then rotates with full tables.
    assert report.replaced["qk_norm_rope"] == 2 * LAYERS, report
    assert report.replaced["add_rms_norm"] == 2 * LAYERS + 1, report
    assert report.replaced["silu_and_mul"] == LAYERS, report


def test_graph_without_the_patterns_is_left_unchanged() -> None:
    model = mlp("cpu")
    gm, example_inputs = _dynamo_graph(model, torch.randn(4, 32))
    with torch.no_grad():
        unpassed = to_aten(gm, example_inputs)
        passed, report = apply_passes(gm, example_inputs, PASS_NAMES)
    assert report.replaced == dict.fromkeys(PASS_NAMES, 0)
    assert passed.code == unpassed.code
    assert count_ops(passed) == report.ops_before == report.ops_after


def test_passes_selected_by_name_through_the_registered_backend() -> None:
    model = qwen3("cpu")
    compiled = torch.compile(
        model,
        backend="ascend_graph",
        dynamic=True,
        options={"capture_sizes": [4, 8], "passes": ["silu_and_mul", "add_rms_norm"], "pad_values": model.pad_values},
    )
    with torch.no_grad():
        ids, positions = _decoder_inputs(6)
        expected = model(ids, positions)
        torch.testing.assert_close(compiled(ids, positions), expected, **TOLERANCES[torch.float32])
    assert ascend_graph.counters()["replays"] == 1


def test_unknown_pass_is_refused_naming_the_allowed() -> None:
    with pytest.raises(ValueError, match=r"unknown pass\(es\) \['fuse_all'\] in passes; allowed passes: \("):
        ascend_graph.GraphConfig.from_options({"passes": ["fuse_all"]})
    with pytest.raises(ValueError, match="must be a list of pass names"):
        ascend_graph.GraphConfig.from_options({"passes": "silu_and_mul"})
    with pytest.raises(ValueError, match="names a pass twice"):
        ascend_graph.GraphConfig(passes=("silu_and_mul", "silu_and_mul"))
