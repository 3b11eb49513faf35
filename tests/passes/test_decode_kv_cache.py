"""Stage 3 of `decode_gemv` (passes/decode_kv_cache.py) on the hand-written Qwen3 decoder of test_decode_qkv_rope
whose attention writes its k and v with vLLM's own `vllm::unified_kv_cache_update` (the layer name as vLLM passes
it, a LayerName on this torch), under a forward context whose stand-in attention layers write into a paged cache
at the step's slot mapping. Compiled through decode_gemv, the model leaves the same cache and output as eager,
and each layer's qkv op and write become one `rms_norm_qkv_rope_kv_cache`; what it must not fold is left alone.
The CPU build has no TRITON_ATTN; vLLM's op calls the stand-in's `do_kv_cache_update`, as it calls the backend's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

# vLLM-only (its forward context and ops): skipped where vLLM is not installed (the GPU lane before its bundle)
pytest.importorskip("vllm")
import vllm.model_executor.layers.attention.attention  # noqa: E402, F401 - registers vllm::unified_kv_cache_update
from ascend_graph.passes import apply_passes  # noqa: E402
from ascend_graph.passes.aten_graph import op_histogram  # noqa: E402
from vllm.forward_context import ForwardContext, override_forward_context  # noqa: E402
from vllm.utils.torch_utils import _encode_layer_name  # noqa: E402

from ascend_graph.vllm_plugin import decode_kv_cache  # noqa: E402, F401 - registers the op
from tests.passes.test_decode_layer import HEAD_DIM, HEADS, KV_HEADS, TOLERANCES  # noqa: E402
from tests.passes.test_decode_qkv_rope import LAYERS, QKV_ROPE, Decoder, Layer, _inputs, rms_norm, rotary_embedding  # noqa: E402

QKV_KV = "ascend_graph.rms_norm_qkv_rope_kv_cache.default"
KV_UPDATE = "vllm.unified_kv_cache_update.default"
SLOTS = 64


class StandInImpl:
    """An attention backend's cache write: slot s holds (k, v) of one token at kv_cache[s]; slots < 0 are padding."""

    def do_kv_cache_update(self, layer: Any, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                           slot_mapping: torch.Tensor) -> None:  # fmt: skip
        real = slot_mapping >= 0
        kv_cache[slot_mapping[real], 0] = key[: slot_mapping.shape[0]][real]
        kv_cache[slot_mapping[real], 1] = value[: slot_mapping.shape[0]][real]


@contextlib.contextmanager
def forward_context(slots: torch.Tensor, dtype: torch.dtype) -> Iterator[dict[str, torch.Tensor]]:
    """vLLM's forward context for one step: a cache per layer, the step's slot mapping for each."""
    caches = {f"layers.{i}.attn": torch.zeros(SLOTS, 2, KV_HEADS, HEAD_DIM, dtype=dtype) for i in range(LAYERS)}
    layers = {name: SimpleNamespace(kv_cache=cache, impl=StandInImpl()) for name, cache in caches.items()}
    context = ForwardContext(
        no_compile_layers=layers, attn_metadata=dict.fromkeys(caches), slot_mapping=dict.fromkeys(caches, slots)
    )
    with override_forward_context(context):
        yield caches


class CachingLayer(Layer):
    """Layer with vLLM's Attention.forward order: the cache write of k and v, whose dummy the attention takes."""

    def attention(self, positions: torch.Tensor, hidden: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(hidden).split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q = rms_norm(q.view(*q.shape[:-1], q.shape[-1] // HEAD_DIM, HEAD_DIM), self.q_norm).view(q.shape)
        k = rms_norm(k.view(*k.shape[:-1], k.shape[-1] // HEAD_DIM, HEAD_DIM), self.k_norm).view(k.shape)
        q, k = rotary_embedding(positions, q, k, cache, self.rotary_dim, True)
        q, k, v = q.view(-1, HEADS, HEAD_DIM), k.view(-1, KV_HEADS, HEAD_DIM), v.view(-1, KV_HEADS, HEAD_DIM)
        dep = torch.ops.vllm.unified_kv_cache_update(k, v, _encode_layer_name(self.layer_name))
        scores = torch.softmax((q * k).sum(-1, keepdim=True), dim=1)
        return (scores * v + q + k).reshape(-1, HEADS * HEAD_DIM) + dep.sum()


class CachingDecoder(Decoder):
    def __init__(self, layer_cls: type[Layer] = CachingLayer) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.layers = torch.nn.ModuleList(layer_cls(HEAD_DIM, True) for _ in range(LAYERS))
        for index, layer in enumerate(self.layers):
            layer.layer_name = f"layers.{index}.attn"


def _compiled(model: torch.nn.Module, histograms: list[dict[str, int]]) -> Any:
    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        passed, _ = apply_passes(gm, example_inputs, ["decode_gemv"])
        histograms.append(op_histogram(passed))
        return passed

    return torch.compile(model, backend=backend, dynamic=True)


def _run(model: Any, tokens: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    inputs = _inputs(tokens, dtype)
    slots = torch.randperm(SLOTS)[:tokens]
    slots[-1] = -1 if tokens > 2 else slots[-1]  # a padded token: written nowhere
    with torch.no_grad(), forward_context(slots, dtype) as caches:
        return model(*inputs), caches


def _assert_same_as_eager(model: torch.nn.Module, compiled: Any, dtype: torch.dtype) -> None:
    for seed, tokens in enumerate((1, 3, 8, 40)):  # 40: above the CUDA kernel's 32 tokens
        (out, caches), (expected, expected_caches) = (
            _run(compiled, tokens, dtype, seed),
            _run(model, tokens, dtype, seed),
        )
        torch.testing.assert_close(out, expected, **TOLERANCES[dtype])
        for name, cache in caches.items():
            assert cache.abs().sum() > 0, name  # written at all
            torch.testing.assert_close(cache, expected_caches[name], **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_kv_cache_write_folds_into_the_qkv_op_and_fills_the_cache_as_eager(dtype: torch.dtype) -> None:
    model, histograms = CachingDecoder().to(dtype).eval(), []
    _assert_same_as_eager(model, _compiled(model, histograms), dtype)
    assert histograms
    for after in histograms:
        assert after.get(QKV_KV) == LAYERS and QKV_ROPE not in after and KV_UPDATE not in after, after


class ValueWrittenInPlace(CachingLayer):
    """v scaled in place between the qkv op and the write: the write must see the scaled v, so it stays."""

    def attention(self, positions: torch.Tensor, hidden: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(hidden).split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q = rms_norm(q.view(*q.shape[:-1], q.shape[-1] // HEAD_DIM, HEAD_DIM), self.q_norm).view(q.shape)
        k = rms_norm(k.view(*k.shape[:-1], k.shape[-1] // HEAD_DIM, HEAD_DIM), self.k_norm).view(k.shape)
        q, k = rotary_embedding(positions, q, k, cache, self.rotary_dim, True)
        q, k, v = q.view(-1, HEADS, HEAD_DIM), k.view(-1, KV_HEADS, HEAD_DIM), v.view(-1, KV_HEADS, HEAD_DIM)
        v.mul_(2.0)
        dep = torch.ops.vllm.unified_kv_cache_update(k, v, _encode_layer_name(self.layer_name))
        return (q + k + v).reshape(-1, HEADS * HEAD_DIM) + dep.sum()


class ValueWrittenThroughAnotherView(CachingLayer):
    """v scaled in place through a view of its own, which the write does not take: the write must still see it."""

    def attention(self, positions: torch.Tensor, hidden: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(hidden).split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q = rms_norm(q.view(*q.shape[:-1], q.shape[-1] // HEAD_DIM, HEAD_DIM), self.q_norm).view(q.shape)
        k = rms_norm(k.view(*k.shape[:-1], k.shape[-1] // HEAD_DIM, HEAD_DIM), self.k_norm).view(k.shape)
        q, k = rotary_embedding(positions, q, k, cache, self.rotary_dim, True)
        q, k, v_heads = q.view(-1, HEADS, HEAD_DIM), k.view(-1, KV_HEADS, HEAD_DIM), v.view(-1, KV_HEADS, HEAD_DIM)
        v.view(-1, KV_HEADS * HEAD_DIM).mul_(2.0)
        dep = torch.ops.vllm.unified_kv_cache_update(k, v_heads, _encode_layer_name(self.layer_name))
        return (q + k + v_heads).reshape(-1, HEADS * HEAD_DIM) + dep.sum()


class KeyAndValueSwapped(CachingLayer):
    """The write takes v as its key and k as its value: not the op's k and v, so it stays."""

    def attention(self, positions: torch.Tensor, hidden: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(hidden).split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        q = rms_norm(q.view(*q.shape[:-1], q.shape[-1] // HEAD_DIM, HEAD_DIM), self.q_norm).view(q.shape)
        k = rms_norm(k.view(*k.shape[:-1], k.shape[-1] // HEAD_DIM, HEAD_DIM), self.k_norm).view(k.shape)
        q, k = rotary_embedding(positions, q, k, cache, self.rotary_dim, True)
        q, k, v = q.view(-1, HEADS, HEAD_DIM), k.view(-1, KV_HEADS, HEAD_DIM), v.view(-1, KV_HEADS, HEAD_DIM)
        dep = torch.ops.vllm.unified_kv_cache_update(v, k, _encode_layer_name(self.layer_name))
        return (q + k + v).reshape(-1, HEADS * HEAD_DIM) + dep.sum()


@pytest.mark.parametrize("layer_cls", [ValueWrittenInPlace, ValueWrittenThroughAnotherView, KeyAndValueSwapped])
def test_a_write_of_other_values_than_the_ops_k_and_v_stays_apart(layer_cls: type[Layer]) -> None:
    model, histograms = CachingDecoder(layer_cls).eval(), []
    _assert_same_as_eager(model, _compiled(model, histograms), torch.float32)
    assert histograms
    for after in histograms:
        assert QKV_KV not in after and after[KV_UPDATE] == LAYERS, after


def test_the_op_writes_through_vllms_op_and_returns_its_dummy() -> None:
    """The op alone: qkv and total as rms_norm_qkv_rope's, the cache as vLLM's own write of the same k and v
    leaves it, no write where the step has no slot mapping (vLLM's profile run), and vLLM's empty dummy."""
    torch.manual_seed(3)
    tokens, hidden, width = 3, 64, (HEADS + 2 * KV_HEADS) * HEAD_DIM
    args = (
        torch.randn(tokens, hidden), torch.randn(tokens, hidden), 1 + 0.1 * torch.randn(hidden), 1e-6,
        torch.randn(width, hidden) / 8, 1 + 0.1 * torch.randn(HEAD_DIM), 1 + 0.1 * torch.randn(HEAD_DIM), 1e-6,
        torch.randn(tokens, HEAD_DIM // 2), torch.randn(tokens, HEAD_DIM // 2), HEADS, KV_HEADS, False, False,
    )  # fmt: skip
    name = _encode_layer_name("layers.1.attn")
    slots = torch.tensor([5, -1, 9])
    with forward_context(slots, torch.float32) as caches:
        qkv, total, dep = torch.ops.ascend_graph.rms_norm_qkv_rope_kv_cache(*args, name)
        expected_qkv, expected_total = torch.ops.ascend_graph.rms_norm_qkv_rope(*args)
        key, value = expected_qkv[:, HEADS * HEAD_DIM :].view(tokens, 2, KV_HEADS, HEAD_DIM).unbind(1)
        expected = torch.zeros_like(caches["layers.1.attn"])
        expected[[5, 9], 0], expected[[5, 9], 1] = key[[0, 2]], value[[0, 2]]
    torch.testing.assert_close(qkv, expected_qkv, rtol=0, atol=0)
    torch.testing.assert_close(total, expected_total, rtol=0, atol=0)
    torch.testing.assert_close(caches["layers.1.attn"], expected, rtol=0, atol=0)
    assert caches["layers.0.attn"].abs().sum() == 0 and dep.numel() == 0
    with override_forward_context(
        ForwardContext(
            no_compile_layers={"layers.1.attn": SimpleNamespace(kv_cache=torch.zeros(1))},
            attn_metadata={"layers.1.attn": None},
            slot_mapping={},
        )  # fmt: skip
    ):
        torch.ops.ascend_graph.rms_norm_qkv_rope_kv_cache(*args, name)  # no slot mapping: nothing written, no error
