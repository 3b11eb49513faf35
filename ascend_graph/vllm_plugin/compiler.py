"""The compile backend vLLM's mode 3 uses for each piece between attention ops (a vLLM CompilerInterface).

The graph capture happens in the static graph wrapper (static_graph.py), which vLLM puts around every piece; this
class decides what runs inside a captured piece (`additional_config.ascend_graph.lowering`):

- "inductor" (default): the piece is compiled by vLLM's own inductor adaptor (the one vLLM's "inductor" backend
  uses, with its compile ranges and compile cache), so a captured piece replays generated C++ kernels.
- "aten": the piece's ATen ops run as traced (no compile time; each op is one dispatch on every replay).
- "host": the compiler the host platform itself names (vLLM's inductor on CPU and CUDA, vllm-ascend's on Ascend,
  the default there); ascend_graph's passes run first.

With `additional_config.ascend_graph.passes` each piece is retraced to ATen and the named fusion passes rewrite it
first (ascend_graph.passes); the fused `ascend_graph::` ops stay calls to their kernels under inductor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from vllm.compilation.compiler_interface import CompilerInterface, InductorAdaptor, InductorStandaloneAdaptor
from vllm.logger import init_logger
from vllm.utils.import_utils import resolve_obj_by_qualname

from ..counters import Count, bump
from ..passes import apply_passes
from . import decode_kv_cache  # noqa: F401 - registers the op decode_gemv places, for pieces loaded from cache
from .options import options_of, platform_attribute, platform_default_lowering

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)


def inductor_adaptor(vllm_config: Any) -> CompilerInterface:
    """The inductor adaptor vLLM itself would pick for backend="inductor" (standalone compile when enabled)."""
    import vllm.envs as envs

    if envs.VLLM_USE_STANDALONE_COMPILE and hasattr(torch._inductor, "standalone_compile"):
        return InductorStandaloneAdaptor(vllm_config.compilation_config.compile_cache_save_format)
    return InductorAdaptor()


def host_compiler(vllm_config: Any) -> CompilerInterface:
    """The compiler of the platform ascend_graph's platform extends (`host_compile_backend()`; "inductor" for
    vLLM's CpuPlatform, which names none of its own)."""
    from vllm.platforms import current_platform

    host = platform_attribute(current_platform, "host_compile_backend", None)
    qualname = host() if host is not None else "inductor"
    if qualname == "inductor":
        return inductor_adaptor(vllm_config)
    return resolve_obj_by_qualname(qualname)()


class InductorDefunctionalizes:
    """Stands in for vLLM's FixFunctionalizationPass in its post-grad pass manager on the CPU lane.

    vLLM's pass compares every `auto_functionalized` node against CUDA-only `torch.ops._C` kernels, which the CPU
    build lacks, so any mutating op in a piece (the CPU build's own GEMM kernels write their output argument)
    raises AttributeError. Leaving the nodes in place is always correct: inductor's own re-inplacing pass, which
    runs after the custom post-grad pass, turns them back into in-place calls.
    """

    def __call__(self, graph: torch.fx.Graph) -> None:
        return None

    def uuid(self) -> str:
        return "ascend_graph-inductor-defunctionalizes-v1"


def _without_cuda_defunctionalization(compiler_config: dict[str, Any] | None) -> None:
    manager = (compiler_config or {}).get("post_grad_custom_post_pass")
    if manager is not None and hasattr(manager, "fix_functionalization"):
        manager.fix_functionalization = InductorDefunctionalizes()


class AscendGraphCompiler(CompilerInterface):
    name = "ascend_graph"

    def __init__(self) -> None:
        # vLLM calls compute_hash(vllm_config) before compiling or loading any piece: the options are read there.
        self.passes: tuple[str, ...] = ()
        self.lowering = "inductor"
        self.inner: CompilerInterface | None = None
        self.on_cpu = True

    def compute_hash(self, vllm_config: Any) -> str:
        from vllm.platforms import current_platform

        options = options_of(vllm_config)
        self.passes = options.passes
        self.lowering = options.lowering or platform_default_lowering(current_platform)
        self.on_cpu = current_platform.is_cpu()
        digest = f"ascend_graph-{self.lowering}-v2"
        if self.lowering != "aten":
            self.inner = inductor_adaptor(vllm_config) if self.lowering == "inductor" else host_compiler(vllm_config)
            digest += "-" + self.inner.compute_hash(vllm_config)
        return digest + ("-passes-" + "-".join(self.passes) if self.passes else "")

    def initialize_cache(self, cache_dir: str, disable_cache: bool = False, prefix: str = "") -> None:
        if self.inner is not None:
            self.inner.initialize_cache(cache_dir, disable_cache, prefix)

    def compile(
        self,
        graph: torch.fx.GraphModule,
        example_inputs: list[Any],
        compiler_config: dict[str, Any],
        compile_range: Any,
        key: str | None = None,
    ) -> tuple[Callable[..., Any] | None, Any | None]:
        bump(Count.PIECE_COMPILES)
        if self.passes:
            graph, report = apply_passes(graph, example_inputs, self.passes)
            logger.info("ascend_graph: passes on a vLLM piece: %s", report)
            bump(Count.FUSED_OPS, report.fused)
        if self.inner is None:
            return graph, None  # aten: no artifact to cache, recompiling a piece is free
        if self.on_cpu:  # on CUDA vLLM's pass has the kernels it compares against
            _without_cuda_defunctionalization(compiler_config)
        return self.inner.compile(graph, example_inputs, compiler_config, compile_range, key)

    def load(
        self, handle: Any, graph: torch.fx.GraphModule, example_inputs: list[Any], graph_index: int, compile_range: Any
    ) -> Callable[..., Any]:
        if self.inner is None:  # aten pieces return no handle, so vLLM never stores one for them
            raise RuntimeError("ascend_graph: a cached piece was found for the 'aten' lowering, which caches none")
        bump(Count.PIECE_LOADS)
        return self.inner.load(handle, graph, example_inputs, graph_index, compile_range)
