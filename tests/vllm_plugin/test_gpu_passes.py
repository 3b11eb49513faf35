"""ascend_graph's fusion passes inside real vLLM 0.26.0 on CUDA (GPU lane, marker gpu_vllm; issue 26's numerics).

- Every pass on (`passes: "all"`, `decode_gemv` included), float32 tiny Qwen3: greedy tokens equal eager's, and the
  passes placed their ops in the pieces vLLM compiled.
- The Qwen3-0.6B shape in bfloat16 (dummy weights, then re-drawn in place at realistic scale from one seed, so both
  processes hold the same model): the first decode step's log-probabilities with `decode_gemv` within bfloat16
  tolerance of stock vLLM's (no ascend_graph section: vLLM's own compiler, runner and graphs) on the same prompts.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path

import pytest

from .test_gpu_vllm import ENGINE, FULL_AND_PIECEWISE, _check, generate

pytestmark = pytest.mark.gpu_vllm

from .test_gpu_vllm import eager, model_dir  # noqa: E402,F401 - the module's fixtures, shared

# Log-probability tolerance of the first decode step (bf16 weights and activations, 28 layers, logits of unit scale):
# reductions in another order than cuBLAS's round differently; a wrong kernel (a dropped norm, residual or gate)
# moves the logits by their own scale, about 1. The test prints the worst difference it saw.
LOGPROB_ATOL = 0.15
VOCAB = 151936  # the Qwen3 shapes' vocabulary (bench/gpu_serve.py)
TOP = 20


def test_every_pass_equals_eager(model_dir: Path, eager: list[list[int]]) -> None:  # noqa: F811
    options = {"ascend_graph": {"mode": "forward-async", "passes": "all"}}
    tokens, counts, graphs, platform = generate(
        model_dir, compilation_config=FULL_AND_PIECEWISE, additional_config=options
    )
    _check(tokens, counts, graphs, platform, eager)
    assert counts.get("fused_ops", 0) > 0, counts  # the passes replaced ops in vLLM's graph


def realistic_weights(worker: object) -> int:
    """For `collective_rpc`: every parameter re-drawn in place from one CUDA generator (seed 0, name order): norms
    1 + N(0, 0.1), matrices N(0, 1 / fan_in). Dummy weights (U(-1e-3, 1e-3)) give near-uniform logits, which any
    kernel matches. In place: the captured graphs read the same storage."""
    import torch

    model = worker.get_model()  # type: ignore[attr-defined]
    generator = torch.Generator(device="cuda").manual_seed(0)
    count = 0
    with torch.no_grad():
        for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            noise = torch.randn(param.shape, generator=generator, device="cuda", dtype=torch.float32)
            values = 1 + 0.1 * noise if param.dim() == 1 else noise * param.shape[-1] ** -0.5
            param.copy_(values.to(param.dtype))
            count += 1
    torch.cuda.synchronize()
    return count


def first_decode_logprobs(shape_dir: Path, **engine_args: object) -> tuple[list[dict[int, float]], dict]:
    """Top-20 log-probabilities of the second generated token (the first decode step) of each prompt, greedy."""
    from vllm import LLM, SamplingParams

    from ascend_graph.vllm_plugin import worker_counters

    shape = {
        "load_format": "dummy",
        "max_model_len": 512,
        "dtype": "bfloat16",
        "compilation_config": FULL_AND_PIECEWISE,
    }
    llm = LLM(model=str(shape_dir), **{**ENGINE, **shape, **engine_args})
    assert llm.collective_rpc(realistic_weights)[0] > 0
    prompts = [{"prompt_token_ids": [(7 * i + 13 * j) % 2000 + 2 for j in range(16 + 24 * i)]} for i in range(4)]
    params = SamplingParams(max_tokens=2, temperature=0, ignore_eos=True, logprobs=TOP)
    outputs = llm.generate(prompts, params)
    counts = llm.collective_rpc(worker_counters)[0]
    steps = [output.outputs[0].logprobs[1] for output in outputs]
    del llm
    gc.collect()
    return [{token: entry.logprob for token, entry in step.items()} for step in steps], counts


def test_decode_gemv_first_decode_step_within_bf16_tolerance_of_stock(tmp_path: Path) -> None:
    from bench.gpu_serve import build_shape_dir

    shape_dir = build_shape_dir(tmp_path / "qwen3-0.6b", "qwen3-0.6b")
    stock, stock_counts = first_decode_logprobs(shape_dir)
    assert stock_counts.get("fused_ops", 0) == 0 and stock_counts.get("captures", 0) == 0, stock_counts
    options = {"ascend_graph": {"mode": "forward-async", "passes": ["decode_gemv"]}}
    fused, counts = first_decode_logprobs(shape_dir, additional_config=options)
    assert counts.get("fused_ops", 0) > 0 and counts["replays"] > 0, counts
    worst = 0.0
    for i, (want, got) in enumerate(zip(stock, fused, strict=True)):
        top_want, top_got = max(want, key=want.__getitem__), max(got, key=got.__getitem__)
        assert want[top_want] > -math.log(VOCAB) + 2, f"prompt {i}: near-uniform logits, the weights were not re-drawn"
        common = want.keys() & got.keys()
        assert len(common) >= TOP // 2, f"prompt {i}: top-{TOP} sets share only {len(common)} tokens"
        worst = max(worst, *(abs(want[t] - got[t]) for t in common))
        # the greedy choice agrees unless stock's top two are within the tolerance of each other
        runner_up = sorted(want.values())[-2]
        assert top_got == top_want or want[top_want] - runner_up < LOGPROB_ATOL, (i, top_want, top_got)
    print(f"first decode step, decode_gemv vs stock: max |logprob difference| over the top-{TOP} = {worst:.4f}")
    assert worst <= LOGPROB_ATOL, worst
