"""The compile backend vLLM's mode 3 uses for each piece between attention ops (a vLLM CompilerInterface).

Lowering on the CPU lane is "aten": the piece's ATen ops run as traced; the graph capture happens in the static
graph wrapper (static_graph.py), which vLLM puts around every piece. With `additional_config.ascend_graph.passes`
each piece is retraced to ATen and the named fusion passes rewrite it first (ascend_graph.passes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch.fx
from vllm.compilation.compiler_interface import CompilerInterface

from ..counters import bump
from ..passes import apply_passes
from .options import parse_additional_config

logger = logging.getLogger(__name__)


class AscendGraphCompiler(CompilerInterface):
    name = "ascend_graph"
    # vLLM calls compute_hash(vllm_config) before compiling any piece: the passes are read there.
    passes: tuple[str, ...] = ()

    def compute_hash(self, vllm_config: Any) -> str:
        self.passes = tuple(parse_additional_config(vllm_config.additional_config)["passes"])
        return "ascend_graph-aten-v1" + ("-passes-" + "-".join(self.passes) if self.passes else "")

    def compile(
        self,
        graph: torch.fx.GraphModule,
        example_inputs: list[Any],
        compiler_config: dict[str, Any],
        compile_range: Any,
        key: str | None = None,
    ) -> tuple[Callable[..., Any] | None, Any | None]:
        bump("compiles")
        if self.passes:
            graph, report = apply_passes(graph, example_inputs, self.passes)
            logger.info("ascend_graph: passes on a vLLM piece: %s", report)
            bump("fused_ops", report.fused)
        return graph, None  # no artifact to cache: recompiling a piece is free
