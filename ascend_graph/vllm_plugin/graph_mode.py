"""What every ascend_graph platform decides the same way: eager requests, forward-async's limits, and (on the
accelerator hosts, CUDA and Ascend) how the `ascend_graph` options map onto the host's own graph mode.

No vLLM import at module level: `vllm.config` imports `vllm.platforms.current_platform`, and the platform modules
import this one.
"""

from __future__ import annotations

from typing import Any

COMPILER = "ascend_graph.vllm_plugin.compiler.AscendGraphCompiler"


class CompilerMixin:
    """Put before the host platform class: vLLM compiles with ascend_graph's compiler, whose "host" lowering asks
    `host_compile_backend()` for the compiler the host platform itself names."""

    @classmethod
    def get_compile_backend(cls) -> str:
        return COMPILER

    @classmethod
    def host_compile_backend(cls) -> str:
        return super().get_compile_backend()  # type: ignore[misc]


def eager_requested(vllm_config: Any) -> bool:
    """The user asked for no graphs: enforce_eager, compilation mode NONE or cudagraph_mode NONE."""
    from vllm.config import CompilationMode, CUDAGraphMode

    compilation, model_config = vllm_config.compilation_config, vllm_config.model_config
    return (model_config is not None and model_config.enforce_eager) or (
        compilation.mode == CompilationMode.NONE or compilation.cudagraph_mode == CUDAGraphMode.NONE
    )


def install_worker(vllm_config: Any, worker: str, host_worker: str, other_choice: str = "") -> None:
    """Run ascend_graph's worker where the host's would run; refuse, naming the ways out, a worker_cls the user set."""
    parallel = vllm_config.parallel_config
    if parallel.worker_cls in ("auto", host_worker):
        parallel.worker_cls = worker
    elif parallel.worker_cls != worker:
        raise ValueError(
            f"ascend_graph graph mode runs its own worker ({worker}); worker_cls={parallel.worker_cls!r} cannot be "
            f"combined with it: leave worker_cls unset, {other_choice}or run eager (enforce_eager=True)"
        )


def check_forward_async_supported(vllm_config: Any) -> None:
    """Refuse, naming the setting, the combinations forward-async does not support yet."""
    problems = []
    if vllm_config.speculative_config is not None:
        problems.append("speculative decoding (speculative_config): drop it or use mode 'sync'")
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline parallelism (pipeline_parallel_size > 1): use tensor parallelism or mode 'sync'")
    if vllm_config.parallel_config.data_parallel_size > 1:
        problems.append("data parallelism (data_parallel_size > 1): use tensor parallelism or mode 'sync'")
    model_config = vllm_config.model_config
    if model_config is not None and model_config.runner_type == "pooling":
        problems.append("pooling models (runner='pooling'): use mode 'sync'")
    if vllm_config.lora_config is not None:
        problems.append("LoRA (enable_lora): use mode 'sync'")
    if problems:
        raise ValueError("ascend_graph mode 'forward-async' does not support " + "; ".join(problems))


def configure_host_graph_mode(
    vllm_config: Any, options: dict[str, Any], host: str, logger: Any, own_runner: bool = True
) -> None:
    """CUDA and Ascend, after the host platform's own config hook: ascend_graph compiles every piece (its fusion
    passes, then the lowering) and `mode` picks the step structure: "sync" without async scheduling,
    "forward-async" with it (the host prepares step N+1 while the graph of step N runs and sampled tokens stay on
    the device). Who captures and replays is `graph_runner`'s choice, applied by the platform: ascend_graph's own
    wrapper and worker, or the host's (vLLM's CUDAGraphWrapper and runner, vllm-ascend's ACLGraphWrapper).
    `own_runner` False: ascend_graph's own runner does not run on this host's configuration (Ascend without
    vllm-ascend's Model Runner V2), whatever `graph_runner` says."""
    if eager_requested(vllm_config):
        logger.info("ascend_graph on %s: graph mode off (eager requested)", host)
        return
    vllm_config.compilation_config.backend = "ascend_graph"  # any non-inductor name: vLLM asks get_compile_backend()
    if options["mode"] == "forward-async":
        check_forward_async_supported(vllm_config)
    vllm_config.scheduler_config.async_scheduling = options["mode"] == "forward-async"
    logger.info(
        "ascend_graph on %s: graph mode on (%s, %s lowering, graphs captured and replayed by %s), "
        "cudagraph_mode %s, capture sizes %s",
        host,
        options["mode"],
        options["lowering"],
        "ascend_graph" if own_runner and options["graph_runner"] == "ascend_graph" else "the host's runner",
        vllm_config.compilation_config.cudagraph_mode,
        vllm_config.compilation_config.cudagraph_capture_sizes,
    )
