"""What every ascend_graph platform decides the same way: eager requests, forward-async's limits, and (on the
accelerator hosts, CUDA and Ascend) how the `ascend_graph` options map onto the host's own graph mode.

No vLLM import at module level: `vllm.config` imports `vllm.platforms.current_platform`, and the platform modules
import this one.
"""

from __future__ import annotations

from typing import Any

from .options import AscendGraphOptions, Lowering, options_of, platform_default_lowering, resolve_mode, write_back

COMPILER = "ascend_graph.vllm_plugin.compiler.AscendGraphCompiler"
BACKEND = "ascend_graph"  # the compilation backend name the platform sets where ascend_graph compiles
SCHEDULER = "ascend_graph.vllm_plugin.multistep.MultiStepScheduler"
ASYNC_SCHEDULER = "ascend_graph.vllm_plugin.multistep.AsyncMultiStepScheduler"


def compiles_with_ascend_graph(vllm_config: Any) -> bool:
    return vllm_config is not None and vllm_config.compilation_config.backend == BACKEND


class CompilerMixin:
    """Put before the host platform class. vLLM asks `get_compile_backend()` twice: for the default backend name
    when it builds a CompilationConfig (no config in reach then: the host's answer, so that every decision vLLM
    takes from it stays the host's), and for the compiler class of a backend that is not its own, under the
    config being compiled (`set_current_vllm_config`): ascend_graph's compiler where the platform set backend
    "ascend_graph" (the user asked for ascend_graph), else the host's. The "host" lowering asks
    `host_compile_backend()` for the compiler the host platform itself names."""

    @classmethod
    def get_compile_backend(cls) -> str:
        from vllm.config import get_current_vllm_config_or_none

        if compiles_with_ascend_graph(get_current_vllm_config_or_none()):
            return COMPILER
        return super().get_compile_backend()  # type: ignore[misc]

    @classmethod
    def host_compile_backend(cls) -> str:
        return super().get_compile_backend()  # type: ignore[misc]


def choose_custom_ops(vllm_config: Any, inductor_lowerings: tuple[Lowering, ...]) -> None:
    """For a config that asked for ascend_graph, before vLLM picks its custom-op default (native PyTorch ops for its
    own "inductor" backend, its C++ kernels for any other): a lowering through vLLM's inductor (`inductor_lowerings`
    on this platform) takes inductor's default, native ops that inductor fuses; the "aten" lowering takes vLLM's
    C++ kernels, which no compiler fuses further. Eager runs and an explicit choice of the user's are kept."""
    options = options_of(vllm_config)
    custom_ops = vllm_config.compilation_config.custom_ops
    if not options.enabled or eager_requested(vllm_config) or any(c in custom_ops for c in ("all", "none")):
        return
    custom_ops.append("none" if (options.lowering or Lowering.INDUCTOR) in inductor_lowerings else "all")


def resolved_options(vllm_config: Any, platform: Any, async_scheduling: bool | None = None) -> AscendGraphOptions:
    """Parse the user's section (unknown keys or values raise), fill in what the host decides (the platform's
    default lowering; the mode from vLLM's async scheduling unless `async_scheduling` is None) and write the resolved
    section back, so that every process reads the same options (`options_of`). Not enabled: nothing is written."""
    options = AscendGraphOptions.parse(vllm_config.additional_config)
    if not options.enabled:
        return options
    if options.lowering is None:
        options = options.replace(lowering=platform_default_lowering(platform))
    if async_scheduling is not None:
        options = resolve_mode(options, async_scheduling)
    return write_back(vllm_config, options)


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
    vllm_config: Any,
    options: AscendGraphOptions,
    host: str,
    logger: Any,
    own_runner: bool = True,
    runs_decode_steps: bool = False,
) -> None:
    """CUDA and Ascend, after the host platform's own config hook, for a user who asked for ascend_graph: it
    compiles every piece (its fusion passes, then the lowering); the step structure is vLLM's async scheduling as
    vLLM or the user set it ("sync" without, "forward-async" with: the host prepares step N+1 while the graph of
    step N runs and sampled tokens stay on the device; `resolve_mode` refuses a contradiction). Who captures and
    replays is `graph_runner`'s choice, applied by the platform: ascend_graph's own wrapper and worker, or the
    host's (vLLM's CUDAGraphWrapper and runner, vllm-ascend's ACLGraphWrapper). `own_runner` False: ascend_graph's
    own runner does not run on this host's configuration (Ascend without vllm-ascend's Model Runner V2).
    `runs_decode_steps` False: decode_steps > 1 is refused on this host (not built there)."""
    if options.decode_steps > 1 and not runs_decode_steps:  # refused before anything changes, eager or not
        raise ValueError(
            f"additional_config.ascend_graph.decode_steps={options.decode_steps} is not built for {host} "
            "(docs/multistep.md); allowed here is 1"
        )
    if eager_requested(vllm_config):
        logger.info("ascend_graph on %s: graph mode off (eager requested)", host)
        if options.decode_steps > 1:
            logger.warning("ascend_graph: decode_steps needs graph mode (ascend_graph's runner); ignored")
        return
    vllm_config.compilation_config.backend = BACKEND  # not vLLM's own name: vLLM asks get_compile_backend()
    if options.forward_async:
        check_forward_async_supported(vllm_config)
    logger.info(
        "ascend_graph on %s: graph mode on (%s, %s lowering, graphs captured and replayed by %s), "
        "cudagraph_mode %s, capture sizes %s",
        host,
        options.mode,
        options.lowering,
        "ascend_graph" if own_runner and options.own_runner else "the host's runner",
        vllm_config.compilation_config.cudagraph_mode,
        vllm_config.compilation_config.cudagraph_capture_sizes,
    )


def configure_decode_steps(
    vllm_config: Any, options: AscendGraphOptions, host: str, logger: Any, async_bursts: bool = False
) -> None:
    """decode_steps > 1 on the accelerator hosts (CUDA: gpu_burst.py; Ascend: npu_burst.py), after the host
    platform's own hook: ascend_graph's scheduler over vLLM's synchronous step loop or, where the host's bursts
    compose with vLLM's async scheduling (`async_bursts`: CUDA and Ascend), over its async one (mode "forward-async",
    `AsyncMultiStepScheduler`). The user chooses (ascend_graph never changes vLLM's async scheduling there). What a
    burst cannot serve yet is refused, naming the setting and the way out."""
    parallel = vllm_config.parallel_config
    problems = []
    if options.forward_async and not async_bursts:
        problems.append(
            "vLLM's async scheduling, which is on here (vLLM's default for this configuration, or the flag given; "
            "mode 'forward-async'): pass --no-async-scheduling (async_scheduling=False)"
        )
    if not options.own_runner:
        problems.append("graph_runner 'vllm' (bursts run in ascend_graph's runner): leave graph_runner unset")
    for present, name in (
        (vllm_config.speculative_config is not None, "speculative decoding (speculative_config)"),
        (parallel.pipeline_parallel_size > 1, "pipeline parallelism (pipeline_parallel_size > 1)"),
        (parallel.data_parallel_size > 1, "data parallelism (data_parallel_size > 1)"),
        (bool(getattr(parallel, "enable_eplb", False)), "expert load balancing (enable_eplb)"),
        (vllm_config.lora_config is not None, "LoRA (enable_lora)"),
        (vllm_config.kv_transfer_config is not None, "KV transfer (kv_transfer_config)"),
    ):
        if present:
            problems.append(name)
    if vllm_config.scheduler_config.scheduler_cls not in (None, SCHEDULER, ASYNC_SCHEDULER):
        problems.append(f"another scheduler_cls ({vllm_config.scheduler_config.scheduler_cls!r})")
    if problems:
        raise ValueError("additional_config.ascend_graph.decode_steps > 1 does not support " + "; ".join(problems))
    vllm_config.scheduler_config.scheduler_cls = ASYNC_SCHEDULER if options.forward_async else SCHEDULER
    logger.info(
        "ascend_graph on %s: up to %d decode steps per host round trip (%s)",
        host,
        options.decode_steps,
        "with vLLM's async scheduling" if options.forward_async else "vLLM's synchronous step loop",
    )


KV_CACHE_UPDATE_OPS = ("vllm::unified_kv_cache_update", "vllm::unified_mla_kv_cache_update")


def keep_kv_cache_update_in_pieces(vllm_config: Any, options: AscendGraphOptions, logger: Any) -> bool:
    """For `decode_gemv` (stage 3, passes/decode_kv_cache.py), before vLLM fills in its splitting ops: vLLM's
    attention ops as the splitting ops, without the KV-cache writes it adds by default (config/compilation.py,
    `set_splitting_ops_for_v1`, vLLM 0.26: its issue 33267, piece reuse across layers, which the layer name as a
    graph input on torch >= 2.11 also serves), so that a layer's write stays in the piece of its qkv op. Only
    where the user asked for `decode_gemv`, in vLLM's piecewise compilation (mode VLLM_COMPILE), and vLLM would
    add them: no splitting ops named, no inductor graph partition (which keeps the writes in the graph itself),
    no attention + quant fusion (which sets its own). The writes then run inside the captured pieces of
    PIECEWISE graphs too, as with vLLM's graph partition; V2's slot mappings are persistent buffers padded with
    PAD_SLOT_ID (v1/worker/gpu/block_table.py), as FULL graphs already need. True where it set them."""
    from vllm.config import CompilationConfig, CompilationMode

    compilation = vllm_config.compilation_config
    if (
        "decode_gemv" not in options.passes
        or eager_requested(vllm_config)
        or compilation.mode != CompilationMode.VLLM_COMPILE
        or compilation.splitting_ops is not None
        or compilation.use_inductor_graph_partition
        or compilation.pass_config.fuse_attn_quant
    ):
        return False
    compilation.splitting_ops = list(CompilationConfig._attention_ops)
    logger.info("ascend_graph: decode_gemv keeps vLLM's KV-cache writes %s in the compiled pieces", KV_CACHE_UPDATE_OPS)
    return True
