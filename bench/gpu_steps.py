"""Decode step time inside vLLM's engine, without the OpenAI server: offline `LLM()` on the GPU lane, one process per
configuration, run one after another on the same GPU. Run by `bench/gpu_lane.sh steps ...` on the device.

The serving benchmark (gpu_serve.py) puts an HTTP server, a tokenizer and a client around every step; on a model
whose step is mostly host time (the tiny Qwen3) their noise is as large as the differences between configurations.
Here each configuration generates for B prompts at once (B = 1, 8, 32; 128 random prompt tokens, --ignore-eos):
once with 1 output token (prefill only) and once with `--tokens`; the decode step time is the difference over the
extra tokens. Each (B, repeat) is one pair; repeats give the spread. Configurations as in gpu_serve.py.

    python3 bench/gpu_steps.py --model tiny --configs stock,ag-forward-async --out $OUT/steps.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# name -> (ascend_graph on the path, LLM() arguments); the same configurations as gpu_serve.py's servers
CONFIGS: dict[str, tuple[bool, dict[str, Any]]] = {
    "stock": (False, {}),
    "stock-no-async": (False, {"async_scheduling": False}),
    "ag-sync": (True, {"additional_config": {"ascend_graph": {"mode": "sync"}}}),
    "ag-forward-async": (True, {"additional_config": {"ascend_graph": {"mode": "forward-async"}}}),
    "ag-compiler-vllm-runner-async": (
        True,
        {"additional_config": {"ascend_graph": {"mode": "forward-async", "graph_runner": "vllm"}}},
    ),
}
BATCHES = (1, 8, 32)


def measure(model_dir: str, config: str, tokens: int, repeats: int, attention: str) -> dict[str, Any]:
    """In the child process: one LLM, decode step times per batch size."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=model_dir,
        dtype="float32",
        seed=0,
        max_model_len=512,
        max_num_seqs=max(BATCHES),
        enable_prefix_caching=False,
        kv_cache_memory_bytes=2 << 30,
        gpu_memory_utilization=0.1,
        **({"attention_config": {"backend": attention}} if attention else {}),
        **CONFIGS[config][1],
    )
    vocab = llm.llm_engine.model_config.get_vocab_size()

    def run(batch: int, max_tokens: int, seed: int) -> float:
        prompts = [
            TokensPrompt(prompt_token_ids=[(seed * 7919 + i * 131 + j) % vocab for j in range(128)])
            for i in range(batch)
        ]
        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        start = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - start

    for batch in BATCHES:  # warm-up: every batch's prefill and decode shapes once (first-use JIT seen at 3c41fa2)
        run(batch, 16, 0)
    steps: dict[str, list[float]] = {}
    for repeat in range(repeats):
        for batch in BATCHES:
            prefill = run(batch, 1, 1 + repeat)
            full = run(batch, tokens, 1001 + repeat)
            steps.setdefault(str(batch), []).append((full - prefill) / (tokens - 1) * 1e3)
    from vllm.platforms import current_platform

    return {"config": config, "platform": type(current_platform).__name__, "decode_step_ms": steps}


def run_config(config: str, model_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in its own process (ascend_graph on the path or not); its figures, or why none."""
    with_ag = CONFIGS[config][0]
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(":") if p and p != env.get("AG_SITE")]
    env["PYTHONPATH"] = ":".join(([env["AG_SITE"]] if with_ag else []) + paths)
    command = [sys.executable, __file__, "--child", config, "--model-dir", str(model_dir)]
    command += ["--tokens", str(args.tokens), "--repeats", str(args.repeats), "--attention", args.attention]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=work)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        print(f"FAILED {config}:\n{done.stderr[-3000:]}", flush=True)
        return {"config": config, "error": done.stderr[-3000:]}
    entry = json.loads(lines[-1][len("RESULT ") :])
    entry["plugin_active"] = entry["platform"].startswith("AscendGraph")
    if entry["plugin_active"] != with_ag:  # a stock figure with the plugin on (or the reverse) is no comparison
        print(f"FAILED {config}: ascend_graph plugin active: {entry['plugin_active']}", flush=True)
        return {"config": config, "error": f"ascend_graph plugin active: {entry['plugin_active']}"}
    medians = {b: round(statistics.median(v), 3) for b, v in entry["decode_step_ms"].items()}
    print(f"{config}: decode step ms (median of {args.repeats}) {medians}", flush=True)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--configs", default="stock,ag-sync,ag-forward-async,ag-compiler-vllm-runner-async")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", default="TRITON_ATTN", help="attention backend ('' for the platform's)")
    parser.add_argument("--out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            "RESULT " + json.dumps(measure(args.model_dir, args.child, args.tokens, args.repeats, args.attention)),
            flush=True,
        )
        return

    import torch

    work = Path(tempfile.mkdtemp(prefix="ag-gpu-steps-"))
    sys.path.insert(0, os.environ.get("AG_SITE", str(Path(__file__).resolve().parents[1])))
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    if args.model != "tiny":
        raise SystemExit("gpu_steps.py: only the tiny model (its step is host time, where the servers' noise hides)")
    model_dir = build_tiny_model_dir(work / "tiny")
    results = []
    for config in args.configs.split(","):
        entry = run_config(config, model_dir, work, args)
        results.append(entry)
    record = {
        "benchmark": f"offline LLM(), tiny Qwen3 float32, B prompts of 128 random tokens, {args.tokens} output "
        "tokens minus 1, per decode step; one process per configuration, one after another",
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
            "git_commit": os.environ.get("AG_COMMIT", "unknown"),
        },
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
