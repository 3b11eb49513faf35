"""The ascend_graph platform on CUDA: vLLM's CUDA platform with the ascend_graph compiler.

UNVERIFIED IN vLLM: vLLM for CUDA is not in this project's reach (the lent GPU machine has no vLLM and no package
index, and the CPU machines cannot import vLLM's CUDA platform). This file is written against vLLM 0.32's
`vllm.platforms.cuda.CudaPlatform` and has never run inside vLLM. ascend_graph's CUDA-graph device and standalone
backend are verified on an H100 (README); here vLLM's own runner and CUDAGraphWrapper capture and replay, which are
vLLM's verified path, and ascend_graph contributes the compiler (fusion passes, then vLLM's inductor or the plain
ATen graph) and maps `mode` onto vLLM's async scheduling (graph_mode.py).
"""

from __future__ import annotations

from typing import Any

from vllm.logger import init_logger
from vllm.platforms.cuda import CudaPlatform

from .graph_mode import CompilerMixin, configure_host_graph_mode
from .options import parse_additional_config

logger = init_logger("vllm." + __name__)


class AscendGraphCudaPlatform(CompilerMixin, CudaPlatform):
    @classmethod
    def check_and_update_config(cls, vllm_config: Any) -> None:
        options = parse_additional_config(vllm_config.additional_config)  # unknown keys or values raise here
        super().check_and_update_config(vllm_config)
        configure_host_graph_mode(vllm_config, options, "CUDA", logger)
