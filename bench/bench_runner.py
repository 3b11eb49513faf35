"""Runner benchmark (sync / scheduler-async / forward-async TPOT) and GPU race stress; see the module docstring.

python bench/bench_runner.py --shapes qwen3-0.6b --out bench/results/runner_h100_qwen3-0.6b.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the device machine runs from a bare checkout

from ascend_graph.benchmarks.runner_tpot import main  # noqa: E402

if __name__ == "__main__":
    main()
