"""The ascend_graph platform on Ascend: vllm-ascend's NPUPlatform with the ascend_graph compiler.

UNVERIFIED: no Ascend NPU, vllm-ascend or torch_npu is in this project's reach; this file has never been imported.
It is written against vllm-ascend's `vllm_ascend.platform.NPUPlatform` (main branch, August 2026, which targets
vLLM 0.27.1: no vllm-ascend release targets vLLM 0.32 yet). ascend_graph contributes the compiler — its fusion
passes (`ascend_graph::` ops with torch_npu kernels, kernels/npu.py), then by default vllm-ascend's own compiler
("host" lowering: torchair / npugraph_ex) — and maps `mode` onto vllm-ascend's async scheduling (graph_mode.py).
With vllm-ascend's Model Runner V2 (`VLLM_USE_V2_MODEL_RUNNER=1`) and `graph_runner: "ascend_graph"` (the default)
it also runs its own FULL graphs, static sets and per-set attention-parameter updates (npu_runner.py, the GPU
lane's code), and vllm-ascend's ACLGraphWrapper captures the pieces per static set (npu_pieces.py); otherwise
vllm-ascend's runner and ACLGraphWrapper capture and replay, as before. `decode_steps` > 1 (in that runner, with
vLLM's async scheduling off or on; `configure_decode_steps`, refusing the rest by name as on CUDA) runs bursts of
decode steps (npu_burst.py; docs/multistep.md, "Ascend", for how they meet async scheduling): built, unverified on an
NPU.

Coexistence: vLLM refuses to start when two platform plugins activate, so beside vllm-ascend ascend_graph's plugin
stays out unless `VLLM_PLUGINS` names it (see `platform_plugin()` in __init__.py and the README).
"""

from __future__ import annotations

from typing import Any

from vllm.logger import init_logger
from vllm_ascend.platform import NPUPlatform

from .graph_mode import (
    CompilerMixin,
    configure_decode_steps,
    configure_host_graph_mode,
    eager_requested,
    install_worker,
    resolved_options,
)
from .options import Lowering, options_of

WORKER = "ascend_graph.vllm_plugin.npu_runner.AscendGraphNPUWorker"
PIECE_WRAPPER = "ascend_graph.vllm_plugin.npu_pieces.StaticSetACLGraphWrapper"
HOST_WORKER = "vllm_ascend.worker.worker.NPUWorker"

logger = init_logger("vllm." + __name__)


class AscendGraphNpuPlatform(CompilerMixin, NPUPlatform):
    ascend_graph_default_lowering = "host"

    @classmethod
    def get_static_graph_wrapper_cls(cls) -> str:
        """vllm-ascend's ACLGraphWrapper with one graph per static set (npu_pieces.py): forward-async captures the
        pieces once per set. Static set 0 is all there is outside ascend_graph's runner: vllm-ascend's behaviour."""
        return PIECE_WRAPPER

    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        options = options_of(vllm_config)  # unknown keys or values raise here
        if not options.enabled:
            super().check_and_update_config(vllm_config)
            return  # listed in VLLM_PLUGINS but not asked for: vllm-ascend's platform, unchanged
        if options.lowering == Lowering.INDUCTOR:
            raise ValueError(
                "additional_config.ascend_graph.lowering='inductor' is not available on Ascend; allowed there are "
                "'host' (vllm-ascend's compiler, the default) and 'aten'"
            )
        super().check_and_update_config(vllm_config)
        options = resolved_options(vllm_config, cls, vllm_config.scheduler_config.async_scheduling)
        wanted = options.own_runner and not eager_requested(vllm_config)
        # vllm-ascend reads VLLM_USE_V2_MODEL_RUNNER alone for this (its patch of VllmConfig.use_v2_model_runner)
        v2 = bool(getattr(vllm_config, "use_v2_model_runner", False))
        worker = vllm_config.parallel_config.worker_cls  # vllm-ascend's hook named its worker (310P, xlite: others)
        own = wanted and v2 and worker in ("auto", HOST_WORKER, WORKER)
        if wanted and not own:
            logger.info(
                "ascend_graph on Ascend: its own graph mode runs in vllm-ascend's Model Runner V2 "
                "(VLLM_USE_V2_MODEL_RUNNER=1) with its NPUWorker (here: V2 %s, worker %s); vllm-ascend's runner "
                "captures and replays",
                v2,
                worker,
            )
        if options.decode_steps > 1 and not eager_requested(vllm_config):  # refusals first: they name the way out
            if options.own_runner and not own:
                raise ValueError(
                    "additional_config.ascend_graph.decode_steps > 1 on Ascend runs in ascend_graph's runner over "
                    f"vllm-ascend's Model Runner V2 with its NPUWorker (here: V2 {v2}, worker {worker!r}): set "
                    "VLLM_USE_V2_MODEL_RUNNER=1 and leave worker_cls unset, or use decode_steps 1"
                )
            configure_decode_steps(vllm_config, options, "Ascend (vllm-ascend)", logger, async_bursts=True)
        if own and options.forward_async:
            _refuse_sleep_mode(vllm_config)
        configure_host_graph_mode(
            vllm_config, options, "Ascend (vllm-ascend)", logger, own_runner=own, runs_decode_steps=True
        )
        if own:
            install_worker(vllm_config, WORKER, HOST_WORKER, "set additional_config.ascend_graph.graph_runner='vllm', ")


def _refuse_sleep_mode(vllm_config: Any) -> None:
    """Forward-async on Ascend keeps a second static input set, allocated with the KV cache: sleep mode discards
    that memory and vllm-ascend's worker tells the runner nothing on wake-up, so the set's block-table pointers
    would come back undefined. Refused at start-up, naming the settings, rather than replaying garbage."""
    model_config = vllm_config.model_config
    if model_config is not None and getattr(model_config, "enable_sleep_mode", False):
        raise ValueError(
            "ascend_graph mode 'forward-async' on Ascend cannot be combined with sleep mode (enable_sleep_mode=True): "
            "its second static input set lives in the KV-cache memory that sleep discards; use mode 'sync', "
            "graph_runner 'vllm', or leave enable_sleep_mode off"
        )
