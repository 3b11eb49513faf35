"""The supported vLLM range lives in one place (vllm_plugin/versions.py)."""

from __future__ import annotations

import pytest

from ascend_graph.vllm_plugin.versions import parse, unsupported_reason


@pytest.mark.parametrize("version", ["0.26.0", "0.27.1rc1", "0.32.0+cpu", "0.32.5"])
def test_supported_versions(version: str) -> None:
    assert unsupported_reason(version) is None


@pytest.mark.parametrize("version", ["0.25.2", "0.33.0", "1.0.0"])
def test_unsupported_versions_are_named(version: str) -> None:
    reason = unsupported_reason(version)
    assert reason is not None and version in reason and "0.26.0 to 0.32.0" in reason


def test_parse() -> None:
    assert parse("0.32.0+cpu") == (0, 32, 0) and parse("0.27.1rc1") == (0, 27, 1) and parse("1") == (1, 0, 0)
