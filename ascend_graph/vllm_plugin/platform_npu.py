"""The ascend_graph platform on Ascend: vllm-ascend's NPUPlatform with the ascend_graph compiler.

UNVERIFIED: no Ascend NPU, vllm-ascend or torch_npu is in this project's reach; this file has never been imported.
It is written against vllm-ascend's `vllm_ascend.platform.NPUPlatform` (main branch, August 2026, which targets
vLLM 0.27.1: no vllm-ascend release targets vLLM 0.32 yet). vllm-ascend keeps everything it owns — its worker and
model runner, its ACLGraphWrapper (NPUGraph capture per size), its capture sizes; ascend_graph contributes the
compiler: its fusion passes (`ascend_graph::` ops with torch_npu kernels, kernels/npu.py), then by default
vllm-ascend's own compiler ("host" lowering: torchair / npugraph_ex), and maps `mode` onto vllm-ascend's async
scheduling (graph_mode.py).

Coexistence: vLLM refuses to start when two platform plugins activate, so beside vllm-ascend ascend_graph's plugin
stays out unless `VLLM_PLUGINS` names it (see `platform_plugin()` in __init__.py and the README).
"""

from __future__ import annotations

from typing import Any

from vllm.logger import init_logger
from vllm_ascend.platform import NPUPlatform

from .graph_mode import CompilerMixin, configure_host_graph_mode
from .options import parse_additional_config

logger = init_logger("vllm." + __name__)


class AscendGraphNpuPlatform(CompilerMixin, NPUPlatform):
    ascend_graph_default_lowering = "host"

    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        options = parse_additional_config(
            vllm_config.additional_config, default_lowering=cls.ascend_graph_default_lowering
        )
        if options["lowering"] == "inductor":
            raise ValueError(
                "additional_config.ascend_graph.lowering='inductor' is not available on Ascend; allowed there are "
                "'host' (vllm-ascend's compiler, the default) and 'aten'"
            )
        super().check_and_update_config(vllm_config)  # vllm-ascend's: it records get_compile_backend() as its compiler
        # vllm-ascend's runner and ACLGraphWrapper capture and replay: ascend_graph's own runner (the GPU lane's,
        # gpu_runner.py) is not wired to vllm-ascend's model runner yet.
        configure_host_graph_mode(vllm_config, options, "Ascend (vllm-ascend)", logger, own_runner=False)
