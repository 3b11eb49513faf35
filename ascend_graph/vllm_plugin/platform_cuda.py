"""The ascend_graph platform on CUDA: vLLM's CUDA platform with ascend_graph's graph mode.

Verified on the H200 with vLLM 0.26.0 (its Model Runner V2; bench/results/, README). By default
(`graph_runner: "ascend_graph"`) ascend_graph compiles every piece (its passes, then the lowering), captures and
replays the graphs itself — FULL graphs through `gpu_runner.AscendGraphCudaGraphs`, PIECEWISE pieces through
`static_graph.AscendGraphStaticWrapper` — and runs `mode` in its worker (`gpu_worker.AscendGraphGPUWorker`): "sync"
without async scheduling, "forward-async" with it and two static input sets. `graph_runner: "vllm"` keeps vLLM's
CUDAGraphWrapper and runner and only compiles (the baseline, and the path of the earlier releases).
"""

from __future__ import annotations

from typing import Any

from vllm.logger import init_logger
from vllm.platforms.cuda import CudaPlatform

from .graph_mode import CompilerMixin, configure_host_graph_mode, eager_requested, install_worker
from .options import parse_additional_config

logger = init_logger("vllm." + __name__)

WRAPPER = "ascend_graph.vllm_plugin.static_graph.AscendGraphStaticWrapper"
WORKER = "ascend_graph.vllm_plugin.gpu_worker.AscendGraphGPUWorker"


class AscendGraphCudaPlatform(CompilerMixin, CudaPlatform):
    @classmethod
    def get_static_graph_wrapper_cls(cls) -> str:
        return WRAPPER  # which hands `graph_runner: "vllm"` to host_static_graph_wrapper_cls() (static_graph.py)

    @classmethod
    def host_static_graph_wrapper_cls(cls) -> str:
        return super().get_static_graph_wrapper_cls()

    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        options = parse_additional_config(vllm_config.additional_config)  # unknown keys or values raise here
        super().check_and_update_config(vllm_config)
        configure_host_graph_mode(vllm_config, options, "CUDA", logger)
        if eager_requested(vllm_config) or options["graph_runner"] != "ascend_graph":
            return
        install_worker(vllm_config, WORKER, CUDA_WORKER, "set additional_config.ascend_graph.graph_runner='vllm', ")


CUDA_WORKER = "vllm.v1.worker.gpu_worker.Worker"
