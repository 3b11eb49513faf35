"""The ascend_graph platform on CUDA: vLLM's CUDA platform with ascend_graph's graph mode, for the users who ask.

Without an `ascend_graph` section in `additional_config` every hook answers as vLLM's CudaPlatform does (the
plugin is installed, not used: stock vLLM's defaults, compiler, runner and speed). With one, verified on the
H100/H200 with vLLM 0.26.0 (its Model Runner V2; bench/results/, README): by default
(`graph_runner: "ascend_graph"`) ascend_graph compiles every piece (its passes, then the lowering), captures and
replays the graphs itself — FULL graphs through `gpu_runner.AscendGraphCudaGraphs`, PIECEWISE pieces through
`static_graph.AscendGraphStaticWrapper` — and runs `mode` in its worker (`gpu_worker.AscendGraphGPUWorker`): "sync"
without vLLM's async scheduling, "forward-async" with it (the mode follows vLLM's setting unless named; a named
mode that contradicts it is refused). `graph_runner: "vllm"` keeps vLLM's
CUDAGraphWrapper and runner and only compiles (the baseline, and the path of the earlier releases).
`decode_steps` > 1 (`configure_decode_steps`) runs bursts of decode steps in ascend_graph's runner (gpu_burst.py,
multistep.py), in mode "sync" and, with vLLM's async scheduling, "forward-async" (the scheduler over vLLM's
AsyncScheduler); built and not yet run on a GPU (tests/vllm_plugin/test_gpu_multistep.py awaits the GPU lane).
"""

from __future__ import annotations

from typing import Any

from vllm.logger import init_logger
from vllm.platforms.cuda import CudaPlatform

from .graph_mode import (
    CompilerMixin,
    choose_custom_ops,
    configure_decode_steps,
    configure_host_graph_mode,
    eager_requested,
    install_worker,
    keep_kv_cache_update_in_pieces,
    resolved_options,
)
from .options import Lowering, options_of

logger = init_logger("vllm." + __name__)

WRAPPER = "ascend_graph.vllm_plugin.static_graph.AscendGraphStaticWrapper"
WORKER = "ascend_graph.vllm_plugin.gpu_worker.AscendGraphGPUWorker"


class AscendGraphCudaPlatform(CompilerMixin, CudaPlatform):
    # vLLM decides four things by asking whether the compile backend is its own "inductor": which ops run as its
    # C++/CUDA kernels (custom_ops, before check_and_update_config), their IR priority, whether its IR ops stay
    # torch ops until its own lowering pass (ir_enable_torch_wrap) and the fusion passes that follow from these.
    # ascend_graph's compiler hands every piece to vLLM's inductor too (lowering "inductor", and "host" on CUDA),
    # so it takes the same answers: native ops that inductor fuses. Seen on the H200 before this: rms_norm on
    # vLLM's C kernel for ascend_graph, inductor's for stock vLLM (serve logs of 9b53006). With ascend_graph's
    # `passes` the IR ops are traced through (the passes match their ATen form).

    @classmethod
    def apply_config_platform_defaults(cls, vllm_config: Any) -> None:
        super().apply_config_platform_defaults(vllm_config)
        choose_custom_ops(vllm_config, (Lowering.INDUCTOR, Lowering.HOST))  # "host" is vLLM's inductor on CUDA
        if not _inductor_lowering(vllm_config):
            return
        compilation = vllm_config.compilation_config
        passes = options_of(vllm_config).passes
        if getattr(compilation, "ir_enable_torch_wrap", False) is None and not passes:
            compilation.ir_enable_torch_wrap = True

    @classmethod
    def get_default_ir_op_priority(cls, vllm_config: Any) -> Any:
        if not _inductor_lowering(vllm_config):
            return super().get_default_ir_op_priority(vllm_config)
        compilation = vllm_config.compilation_config
        backend, compilation.backend = compilation.backend, "inductor"  # vLLM's answer for its inductor backend
        try:
            return super().get_default_ir_op_priority(vllm_config)
        finally:
            compilation.backend = backend

    @classmethod
    def get_static_graph_wrapper_cls(cls) -> str:
        return WRAPPER  # which hands `graph_runner: "vllm"` to host_static_graph_wrapper_cls() (static_graph.py)

    @classmethod
    def host_static_graph_wrapper_cls(cls) -> str:
        return super().get_static_graph_wrapper_cls()

    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        options = options_of(vllm_config)  # unknown keys or values raise here
        super().check_and_update_config(vllm_config)
        if not options.enabled:
            return  # installed, not asked for: vLLM's CUDA platform, unchanged
        options = resolved_options(vllm_config, cls, vllm_config.scheduler_config.async_scheduling)
        if options.decode_steps > 1 and not eager_requested(vllm_config):
            # its refusals first: they name the way out; bursts compose with async scheduling here (gpu_burst.py)
            configure_decode_steps(vllm_config, options, "CUDA", logger, async_bursts=True)
        configure_host_graph_mode(vllm_config, options, "CUDA", logger, runs_decode_steps=True)
        keep_kv_cache_update_in_pieces(vllm_config, options, logger)  # decode_gemv only
        if eager_requested(vllm_config) or not options.own_runner:
            return
        install_worker(vllm_config, WORKER, CUDA_WORKER, "set additional_config.ascend_graph.graph_runner='vllm', ")


CUDA_WORKER = "vllm.v1.worker.gpu_worker.Worker"


def _inductor_lowering(vllm_config: Any) -> bool:
    """ascend_graph compiles this run with vLLM's inductor (not eager, lowering "inductor" or "host"). The
    compilation mode may still be unset (vLLM sets it after the platform defaults: none at optimisation level 0)."""
    unset_and_o0 = (
        vllm_config.compilation_config.mode is None and int(getattr(vllm_config, "optimization_level", 1)) == 0
    )
    options = options_of(vllm_config)
    if not options.enabled or eager_requested(vllm_config) or unset_and_o0:
        return False
    return options.lowering in (None, Lowering.INDUCTOR, Lowering.HOST)  # None: the default, "inductor" on CUDA
