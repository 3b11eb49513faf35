"""vLLM's CPU worker with the ascend_graph model runner (graph mode "sync" or "forward-async")."""

from __future__ import annotations

from typing import Any

from vllm.v1.worker.cpu_worker import CPUWorker

from .model_runner import AscendGraphCPUModelRunner
from .options import options_of


class AscendGraphCPUWorker(CPUWorker):
    def init_device(self) -> None:
        super().init_device()
        if getattr(self, "use_v2_model_runner", False):
            raise ValueError("ascend_graph needs vLLM's V1 model runner on CPU; unset VLLM_USE_V2_MODEL_RUNNER")
        # vLLM builds its CPUModelRunner here; ours extends it with the device job and forward-async, so the
        # object is re-classed rather than rebuilt (its construction stays vLLM's own).
        self.model_runner.__class__ = AscendGraphCPUModelRunner
        options = options_of(self.vllm_config)
        self.model_runner.setup_ascend_graph(options.mode, options.decode_steps)

    def compile_or_warm_up_model(self) -> Any:
        # Where vLLM's GPU worker captures its graphs: the model is compiled and the KV cache and the graph
        # dispatcher exist (the CPU worker warms up earlier, before either).
        result = super().compile_or_warm_up_model()
        self.model_runner.capture_at_startup()
        return result
