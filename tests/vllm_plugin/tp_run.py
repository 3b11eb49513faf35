"""Run by test_llm_graph_mode in a child process (bounded by the test's timeout): LLM(tensor_parallel_size=2) in
graph mode forward-async over the shared prompts; writes tokens and every worker's counters as JSON."""

from __future__ import annotations

import json
import sys

if __name__ == "__main__":  # vLLM spawns processes
    from vllm import LLM, SamplingParams

    from ascend_graph.vllm_plugin import worker_counters, worker_platform
    from tests.vllm_plugin.test_llm_graph_mode import GRAPH, MAX_TOKENS, PROMPTS

    model_dir, out = sys.argv[1], sys.argv[2]
    llm = LLM(
        model=model_dir,
        max_model_len=256,
        dtype="float32",
        seed=0,
        tensor_parallel_size=2,
        compilation_config=GRAPH,
        additional_config={"ascend_graph": {"mode": "forward-async"}},
    )
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in MAX_TOKENS]
    outputs = llm.generate(PROMPTS, params)
    result = {
        "tokens": [list(output.outputs[0].token_ids) for output in outputs],
        "counters": llm.collective_rpc(worker_counters),
        "platforms": llm.collective_rpc(worker_platform),
    }
    with open(out, "w") as handle:
        json.dump(result, handle)
