"""vLLM's GPU worker with the ascend_graph model runner (graph mode "sync" or "forward-async" on CUDA; bursts of
decode steps with decode_steps > 1, gpu_burst.py)."""

from __future__ import annotations

from vllm.v1.worker.gpu_worker import Worker

from .gpu_runner import AscendGraphGPUModelRunner
from .options import options_of
from .versions import uses_v2_runner


class AscendGraphGPUWorker(Worker):
    def init_device(self) -> None:
        super().init_device()
        if not uses_v2_runner(self):
            raise ValueError(
                "ascend_graph's own graph mode on CUDA runs in vLLM's Model Runner V2 (vLLM's default on CUDA): "
                "unset VLLM_USE_V2_MODEL_RUNNER (it is 0 here), or set "
                "additional_config.ascend_graph.graph_runner='vllm'"
            )
        # vLLM builds its V2 GPUModelRunner here; ours only adds the graphs' capture step and the static sets, so
        # the object is re-classed rather than rebuilt (its construction stays vLLM's own).
        self.model_runner.__class__ = AscendGraphGPUModelRunner
        options = options_of(self.vllm_config)
        self.model_runner.setup_ascend_graph(options.mode, options.verify_requested)
        self.model_runner.setup_bursts(options.decode_steps)
