"""The ops register once per process, also where the checkout's `kernels/` folder is importable as a top-level
`kernels` (pytest puts the checkout's root on sys.path; transformers imports `kernels` to probe for the Hugging Face
package of that name): a second registration would replace the operator objects that graphs and passes hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, sys, torch
sys.path.insert(0, sys.argv[1])
import ascend_graph.kernels
names = ["decode_linear", "rms_norm_linear", "rms_norm_qkv_rope", "add_rms_norm", "rms_norm_rope", "silu_and_mul"]
before = {name: getattr(torch.ops.ascend_graph, name).default for name in names}
shell = importlib.import_module("kernels")  # what transformers' probe does
assert shell.__file__.startswith(sys.argv[1]), shell.__file__  # the checkout's folder, not another package
moved = [name for name in names if getattr(torch.ops.ascend_graph, name).default is not before[name]]
print("moved:", moved, "version:", getattr(shell, "__version__", "N/A"))
"""


def test_importing_the_folder_as_top_level_kernels_registers_nothing_again() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, timeout=300, cwd="/"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # no op object replaced, and no version: transformers reads the folder as no usable `kernels` package
    assert result.stdout.strip().splitlines()[-1] == "moved: [] version: N/A", result.stdout
