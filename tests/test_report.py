"""`GraphCompiled.report()` and `ascend_graph.inspect()`: what was captured, memory, passes and fallbacks."""

from __future__ import annotations

import json

import pytest
import torch

import ascend_graph
from ascend_graph.device.cpu import CPU_DEVICE

from .helpers import compile_recording
from .models import mlp


def test_report_lists_captures_fallbacks_and_is_json_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    original = CPU_DEVICE.capture

    def capture(fn, args, pool):  # type: ignore[no-untyped-def]
        if any(isinstance(a, torch.Tensor) and tuple(a.shape) == (8, 32) for a in args):
            raise torch.OutOfMemoryError("out of memory (injected)")
        return original(fn, args, pool)

    monkeypatch.setattr(CPU_DEVICE, "capture", capture)
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[2, 4, 8])
    with torch.no_grad():
        compiled(torch.randn(3, 32))
    report = pieces[0].report()
    json.dumps(report)
    assert report["device"] == "cpu" and report["lowering"] == "aten" and report["sizes"] == [2, 4, 8]
    assert [row["size"] for row in report["captured"]] == [2, 4]
    assert report["fallbacks"][0]["size"] == 8 and "capture_sizes=[2, 4]" in report["fallbacks"][0]["advice"]
    assert report["passes"] == "none" and report["verify"]["enabled"] is False
    assert report["graph_fallback"] is None


def test_passes_come_from_the_graph_or_its_config() -> None:
    model = mlp("cpu")
    compiled, pieces = compile_recording(model, capture_sizes=[4])
    with torch.no_grad():
        compiled(torch.randn(3, 32))
    pieces[0].passes_applied = ["fuse_rms_norm"]  # what the passes feature records
    assert pieces[0].report()["passes"] == ["fuse_rms_norm"]


def test_inspect_default_model_and_a_users_model() -> None:
    result = ascend_graph.inspect(capture_sizes=[2, 4])
    assert result["model"] == "tiny-qwen3-decoder"
    assert [row["size"] for row in result["graphs"][0]["captured"]] == [2, 4]
    assert result["counters"]["replays"] == 1
    torch._dynamo.reset()
    mine = ascend_graph.inspect(mlp("cpu"), (torch.randn(5, 32),), capture_sizes=[8])
    assert mine["model"] == "Sequential" and mine["graphs"][0]["captured"][0]["size"] == 8
    with pytest.raises(ValueError, match="pass args="):
        ascend_graph.inspect(mlp("cpu"))
