"""The compile backend vLLM's mode 3 uses for each piece between attention ops (a vLLM CompilerInterface).

Lowering on the CPU lane is "aten": the piece's ATen ops run as traced; the graph capture happens in the static
graph wrapper (static_graph.py), which vLLM puts around every piece.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.fx
from vllm.compilation.compiler_interface import CompilerInterface

from ..counters import bump


class AscendGraphCompiler(CompilerInterface):
    name = "ascend_graph"

    def compute_hash(self, vllm_config: Any) -> str:
        return "ascend_graph-aten-v1"

    def compile(
        self,
        graph: torch.fx.GraphModule,
        example_inputs: list[Any],
        compiler_config: dict[str, Any],
        compile_range: Any,
        key: str | None = None,
    ) -> tuple[Callable[..., Any] | None, Any | None]:
        bump("compiles")
        return graph, None  # no artifact to cache: recompiling a piece is free
