"""`rms_norm_qkv_rope_npu` (kernels/decode_npu.py) against the reference, through a stand-in torch_npu: no NPU in
reach. The stand-in's operators compute what torch-npu 2.11.0's docs say they compute (npu_rms_norm,
npu_add_rms_norm with its float32 sum, the "half" rotation x * cos + rotate_half(x) * sin of npu_rotary_mul and
npu_apply_rotary_pos_emb) and reject the inputs their docs rule out (layouts, table shapes, dtypes, empty
tensors); npu_apply_rotary_pos_emb writes its result into query and key, as the real kernel does. So these tests
check the call order, the arguments and the maths at Qwen3-like small shapes; nothing here ran on an NPU."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from ascend_graph.kernels import decode_npu, decode_qkv_rope, norm

from tests.kernels.test_decode_linear import assert_close
from tests.kernels.test_decode_qkv_rope import qkv_rope_cases

HIDDEN, Q_HEADS, KV_HEADS = 64, 4, 2  # Qwen3's 2 : 1 grouping of q to kv heads, small


@dataclass
class Call:
    name: str
    shapes: list[tuple[int, ...]]
    gamma: torch.Tensor | None = None
    epsilon: float | None = None


@dataclass
class StandIn:
    calls: list[Call] = field(default_factory=list)

    def names(self) -> list[str]:
        return [call.name for call in self.calls]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def _check_table(x: torch.Tensor, table: torch.Tensor, allowed: tuple[tuple[int, ...], ...], op: str) -> None:
    if table.dim() != 4 or tuple(table.shape) not in allowed or table.dtype != x.dtype:
        raise ValueError(f"stand-in {op}: table {tuple(table.shape)} {table.dtype} for input {tuple(x.shape)}")


@pytest.fixture
def torch_npu(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    standin = StandIn()

    def npu_rms_norm(x: torch.Tensor, gamma: torch.Tensor, epsilon: float = 1e-6) -> tuple[torch.Tensor, ...]:
        standin.calls.append(Call("npu_rms_norm", [tuple(x.shape)], gamma, epsilon))
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + epsilon)
        return norm.rms_norm_reference(x, gamma, epsilon), rstd

    def npu_add_rms_norm(
        x1: torch.Tensor, x2: torch.Tensor, gamma: torch.Tensor, epsilon: float = 1e-6
    ) -> tuple[torch.Tensor, ...]:
        standin.calls.append(Call("npu_add_rms_norm", [tuple(x1.shape), tuple(x2.shape)], gamma, epsilon))
        normed, total = norm.add_rms_norm_reference(x1, x2, gamma, epsilon, fp32_sum=True)
        return normed, torch.empty(0), total

    def npu_rotary_mul(
        x: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, rotary_mode: str = "half", rotate: Any = None
    ) -> torch.Tensor:
        standin.calls.append(Call("npu_rotary_mul", [tuple(x.shape), tuple(r1.shape)]))
        batch, seq, heads, dim = x.shape if x.dim() == 4 else (0, 0, 0, 1)
        if x.dim() != 4 or dim % 2 or dim >= 896 or rotary_mode != "half" or rotate is not None:
            raise ValueError(f"stand-in npu_rotary_mul: input {tuple(x.shape)}, mode {rotary_mode}")
        layouts = ((1, seq, 1, dim), (batch, seq, 1, dim), (batch, seq, heads, dim))  # BSND: 1S1D, BS1D, BSND
        for table in (r1, r2):
            _check_table(x, table, layouts, "npu_rotary_mul")
        return _rotate(x, r1, r2)

    def npu_apply_rotary_pos_emb(
        query: torch.Tensor,
        key: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layout: str = "BSND",
        rotary_mode: str = "half",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        standin.calls.append(Call("npu_apply_rotary_pos_emb", [tuple(t.shape) for t in (query, key, cos)]))
        ok = layout == "BSND" and rotary_mode == "half" and query.dim() == key.dim() == 4
        ok = ok and query.shape[-1] in (64, 128) and query.numel() > 0 and key.numel() > 0
        ok = ok and query.shape[:2] == key.shape[:2] and query.shape[-1] == key.shape[-1] and key.dtype == query.dtype
        if not ok or not (query.is_contiguous() and key.is_contiguous()):
            raise ValueError(f"stand-in npu_apply_rotary_pos_emb: query {tuple(query.shape)}, key {tuple(key.shape)}")
        for table in (cos, sin):
            _check_table(query, table, ((*query.shape[:2], 1, query.shape[-1]),), "npu_apply_rotary_pos_emb")
        query.copy_(_rotate(query, cos, sin))  # in place, as the kernel does; the schema returns them
        key.copy_(_rotate(key, cos, sin))
        return query, key

    module = types.SimpleNamespace(
        npu_rms_norm=npu_rms_norm,
        npu_add_rms_norm=npu_add_rms_norm,
        npu_rotary_mul=npu_rotary_mul,
        npu_apply_rotary_pos_emb=npu_apply_rotary_pos_emb,
    )
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    yield standin


def cases(dtype: torch.dtype, head_dim: int, tokens: int) -> list[Any]:
    return qkv_rope_cases("cpu", dtype, HIDDEN, head_dim, Q_HEADS, KV_HEADS, tokens)


@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("tokens", [1, 3])
def test_matches_the_reference_in_float32(torch_npu: StandIn, head_dim: int, tokens: int) -> None:
    for case in cases(torch.float32, head_dim, tokens):
        got = decode_npu.rms_norm_qkv_rope_npu(*case.args)
        assert_close(got, case.reference(*case.args), torch.float32, case.name)


@pytest.mark.parametrize(("head_dim", "rope"), [(128, ["npu_apply_rotary_pos_emb"]), (32, ["npu_rotary_mul"] * 2)])
def test_calls_the_norms_then_the_rotary_operator(torch_npu: StandIn, head_dim: int, rope: list[str]) -> None:
    tokens, eps, head_eps = 3, 1e-5, 1e-6
    for case in cases(torch.float32, head_dim, tokens):
        x, residual, norm_weight, _, weight, q_norm, k_norm, _, cos, sin, *rest = case.args
        torch_npu.calls.clear()
        args = (x, residual, norm_weight, eps, weight, q_norm, k_norm, head_eps, cos, sin, *rest)
        decode_npu.rms_norm_qkv_rope_npu(*args)
        first = "npu_rms_norm" if residual is None else "npu_add_rms_norm"
        assert torch_npu.names() == [first, "npu_rms_norm", "npu_rms_norm", *rope], case.name
        norms = torch_npu.calls[:3]
        assert all(call.gamma is gamma for call, gamma in zip(norms, (norm_weight, q_norm, k_norm), strict=True))
        assert [call.epsilon for call in norms] == [eps, head_eps, head_eps]
        assert norms[1].shapes == [(tokens, Q_HEADS, head_dim)] and norms[2].shapes == [(tokens, KV_HEADS, head_dim)]
        table = (1, tokens, 1, head_dim)
        if len(rope) == 1:
            q4, k4 = (1, tokens, Q_HEADS, head_dim), (1, tokens, KV_HEADS, head_dim)
            assert torch_npu.calls[3].shapes == [q4, k4, table]
        else:
            assert [call.shapes[1] for call in torch_npu.calls[3:]] == [table, table]


def test_bfloat16_without_a_float32_sum_adds_as_the_reference_does(torch_npu: StandIn) -> None:
    """npu_add_rms_norm sums in float32, so fp32_sum=False below float32 takes add_rms_norm_npu's reference path."""
    for case in cases(torch.bfloat16, 128, 3):
        torch_npu.calls.clear()
        got = decode_npu.rms_norm_qkv_rope_npu(*case.args)
        assert_close(got, case.reference(*case.args), torch.bfloat16, case.name)
        has_residual, fp32_sum = case.args[1] is not None, case.args[12]
        assert ("npu_add_rms_norm" in torch_npu.names()) == (has_residual and fp32_sum), case.name


def test_zero_tokens_run_the_reference(torch_npu: StandIn) -> None:
    case = cases(torch.float32, 128, 0)[0]
    got = decode_npu.rms_norm_qkv_rope_npu(*case.args)
    assert got[0].shape == (0, (Q_HEADS + 2 * KV_HEADS) * 128) and torch_npu.calls == []


def test_bad_shapes_raise_as_the_reference_does(torch_npu: StandIn) -> None:
    case = cases(torch.float32, 64, 2)[0]
    args = list(case.args)
    args[8] = args[8][:, :-1]  # cos one column short
    with pytest.raises(ValueError, match="cos and sin"):
        decode_npu.rms_norm_qkv_rope_npu(*args)
    assert torch_npu.calls == []


def test_the_comparison_sees_swapped_head_norms_and_a_reversed_rotation(torch_npu: StandIn) -> None:
    """Mistakes an NPU port could make give results outside the tolerance the tests above use."""
    for head_dim in (32, 128):
        args = list(cases(torch.float32, head_dim, 3)[1].args)
        expected = decode_qkv_rope.rms_norm_qkv_rope_reference(*args)
        swapped = args[:5] + [args[6], args[5]] + args[7:]
        reversed_sin = args[:9] + [-args[9]] + args[10:]
        for broken in (swapped, reversed_sin):
            got = decode_npu.rms_norm_qkv_rope_npu(*broken)
            assert not torch.allclose(got[0], expected[0], rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(got[1], expected[1])  # the residual stream is untouched by either


def test_the_stand_in_rejects_what_the_docs_rule_out(torch_npu: StandIn) -> None:
    """Its checks are live: half-width tables, another head dim and strided heads fail, so the passes above say
    that the function hands the operators full-width tables in the BSND layout."""
    module = sys.modules["torch_npu"]
    q, k = torch.randn(1, 3, Q_HEADS, 128), torch.randn(1, 3, KV_HEADS, 128)
    full, half = torch.randn(1, 3, 1, 128), torch.randn(1, 3, 1, 64)
    with pytest.raises(ValueError):
        module.npu_apply_rotary_pos_emb(q, k, half, half)
    with pytest.raises(ValueError):
        module.npu_apply_rotary_pos_emb(q[..., :96], k[..., :96], full[..., :96], full[..., :96])
    with pytest.raises(ValueError):
        module.npu_apply_rotary_pos_emb(torch.randn(1, 3, 128, Q_HEADS).transpose(2, 3), k, full, full)
    with pytest.raises(ValueError):
        module.npu_rotary_mul(q, half, half)
    with pytest.raises(ValueError):
        module.npu_rotary_mul(q[0], full[0], full[0])
