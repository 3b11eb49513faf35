"""The supported vLLM range per lane lives in one place (vllm_plugin/versions.py); the vLLM conformance test
(tests/conformance/test_vllm_conformance.py) checks that each declared range passes the source check."""

from __future__ import annotations

import pytest

from ascend_graph.errors import UnsupportedVllmError
from ascend_graph.vllm_plugin.versions import SUPPORTED, check_supported, parse, supported_range, unsupported_reason


@pytest.mark.parametrize(("lane", "version"), [("cuda", "0.26.0"), ("cuda", "0.26.1"), ("cpu", "0.32.0+cpu")])
def test_supported_versions(lane: str, version: str) -> None:
    assert unsupported_reason(version, lane) is None
    check_supported(lane, version)


@pytest.mark.parametrize(
    ("lane", "version"), [("cuda", "0.32.0"), ("cuda", "0.25.2"), ("cpu", "0.26.0"), ("cpu", "0.33.0")]
)
def test_unsupported_versions_raise_one_clear_error(lane: str, version: str) -> None:
    with pytest.raises(UnsupportedVllmError) as raised:
        check_supported(lane, version)
    message = str(raised.value)
    assert version in message and supported_range(lane) in message and "VLLM_PLUGINS" in message


def test_without_a_lane_any_lanes_range_counts() -> None:
    assert unsupported_reason("0.32.0") is None and unsupported_reason("0.26.0") is None
    assert "cuda: vLLM 0.26.x" in unsupported_reason("0.34.0")


def test_an_unknown_lane_is_named() -> None:
    with pytest.raises(ValueError, match="lane must be one of"):
        supported_range("tpu")
    assert set(SUPPORTED) == {"cuda", "cpu", "npu"}


def test_parse() -> None:
    assert parse("0.32.0+cpu") == (0, 32, 0) and parse("0.27.1rc1") == (0, 27, 1) and parse("1") == (1, 0, 0)
