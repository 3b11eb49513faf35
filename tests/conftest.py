"""Shared fixtures: the device-conformance parametrisation and a fresh dynamo/counter state per test."""

from __future__ import annotations

import pytest
import torch

import ascend_graph

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device)"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """Every test taking `device` runs on each available device: the device-conformance suite."""
    return request.param


@pytest.fixture(autouse=True)
def _fresh_state() -> None:
    torch._dynamo.reset()
    ascend_graph.reset_counters()
