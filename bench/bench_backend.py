"""Decode-step benchmark of the backend (the device run calls this script; `ascend-graph bench` runs the same).

python bench/bench_backend.py --preset cuda --shapes qwen3-0.6b --out bench/results/backend_h100_qwen3-0.6b.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the device machine runs from a bare checkout

from ascend_graph.benchmarks.decode_step import main  # noqa: E402

if __name__ == "__main__":
    main()
