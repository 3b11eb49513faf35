"""Tensor-parallel decode (tokens TP=W vs TP=1, step time) under torchrun; see ascend_graph/benchmarks/tp_decode.py.

NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
    torchrun --nproc-per-node 2 bench/bench_tp.py --preset gpu --out bench/results/tp_h200_qwen3-8b.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the device machine runs from a bare checkout

from ascend_graph.benchmarks.tp_decode import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
