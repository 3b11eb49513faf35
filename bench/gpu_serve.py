"""Serving benchmark on the GPU lane: `vllm serve` + `vllm bench serve` (vLLM 0.26.0 for CUDA, the offline bundle),
stock vLLM against ascend_graph, side by side in one call. Run by `bench/gpu_lane.sh bench ...` on the device.

Each configuration is one server on 127.0.0.1; each concurrency is benchmarked `--rounds` times, the rounds of all
concurrencies interleaved (c1, c8, c32, c1, ...), random 128 in / 128 out, --ignore-eos. Stock vLLM runs without
ascend_graph on PYTHONPATH (no plugin: vLLM's CUDA graphs, async scheduling, inductor); ascend_graph configurations
put the installed project first. Model shapes: the tiny Qwen3 of the tests (float32 weights served in bf16), and
the Qwen3-0.6B and Qwen3-8B shapes with dummy weights (`--load-format dummy`), whose tokenizer is a word-level one
of the shape's full vocabulary built here (the random dataset decodes and re-encodes ids one to one).

    python3 bench/gpu_serve.py --models tiny,qwen3-0.6b --configs stock,ag-sync,ag-forward-async --out $OUT/x.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES = {  # public Qwen3 configs (hidden, layers, heads, kv heads, intermediate, vocab)
    "qwen3-0.6b": (1024, 28, 16, 8, 3072, 151936),
    "qwen3-8b": (4096, 36, 32, 8, 12288, 151936),
}
AG = "--additional-config"
CONFIGS: dict[str, tuple[bool, list[str]]] = {  # name -> (ascend_graph on the path, server arguments)
    "eager": (False, ["--enforce-eager"]),
    "stock": (False, []),
    "ag-sync": (True, [AG, '{"ascend_graph": {"mode": "sync"}}']),
    "ag-forward-async": (True, [AG, '{"ascend_graph": {"mode": "forward-async"}}']),
    # ablation: what separates the figures above
    "stock-no-async": (False, ["--no-async-scheduling"]),
    "ag-compiler-vllm-runner-sync": (True, [AG, '{"ascend_graph": {"mode": "sync", "graph_runner": "vllm"}}']),
    "ag-compiler-vllm-runner-async": (
        True,
        [AG, '{"ascend_graph": {"mode": "forward-async", "graph_runner": "vllm"}}'],
    ),
}
sys.path.insert(0, os.environ.get("AG_SITE", str(Path(__file__).resolve().parents[1])))  # the installed project
from ascend_graph.vllm_plugin.server import free_port, stop, wait_ready  # noqa: E402

CONCURRENCY = (1, 8, 32)
PROMPTS = {1: 8, 8: 32, 32: 64}
CAPTURE_LINE = re.compile(r"Graph capturing finished in (\d+) secs, took ([\d.]+) GiB")
OUR_CAPTURE_LINE = re.compile(r"ascend_graph: captured (\d+) (\w+) sizes \(static set (\d)\) in ([\d.]+) s")


def build_shape_dir(path: Path, shape: str) -> Path:
    """config.json of the shape and a word-level tokenizer of its whole vocabulary (weights: --load-format dummy)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    hidden, layers, heads, kv_heads, intermediate, vocab = SHAPES[shape]
    path.mkdir(parents=True, exist_ok=True)
    words = {"<unk>": 0, "<|endoftext|>": 1, **{f"w{i}": i for i in range(2, vocab)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<|endoftext|>")
    fast.save_pretrained(path)
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": 128,
        "intermediate_size": intermediate,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000,
        "hidden_act": "silu",
        "tie_word_embeddings": shape == "qwen3-0.6b",
        "torch_dtype": "bfloat16",
        "eos_token_id": 1,
    }
    (path / "config.json").write_text(json.dumps(config, indent=1))
    return path


def _env(with_ag: bool) -> dict[str, str]:
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(":") if p and p != env.get("AG_SITE")]
    if with_ag:
        paths.insert(0, env["AG_SITE"])
    env["PYTHONPATH"] = ":".join(paths)
    return env


def _bench(model_dir: Path, port: int, concurrency: int, result: Path) -> dict[str, Any]:
    """One `vllm bench serve` run, in this process (vLLM is imported once, not per run)."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = ["--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}", "--model", "m"]
    argv += ["--tokenizer", str(model_dir), "--dataset-name", "random", "--random-input-len", "128"]
    argv += ["--random-output-len", "128", "--num-prompts", str(PROMPTS[concurrency])]
    argv += ["--max-concurrency", str(concurrency), "--ignore-eos", "--percentile-metrics", "ttft,tpot,itl"]
    argv += ["--metric-percentiles", "50,99", "--seed", "0", "--save-result", "--result-dir", str(result.parent)]
    argv += ["--result-filename", result.name]
    bench_main(parser.parse_args(argv))
    raw = json.loads(result.read_text())
    keep = ("completed", "failed", "duration", "output_throughput")
    figures = {key: raw.get(key) for key in keep}
    figures.update({k: v for k, v in raw.items() if re.fullmatch(r"(p50|p99|mean|median)_(ttft|tpot|itl)_ms", k)})
    return figures


def _check_plugin(log_text: str, with_ag: bool) -> None:
    """A stock baseline with ascend_graph active (or the reverse) would be a wrong comparison: refuse it."""
    active = "Platform plugin ascend_graph is activated" in log_text
    if active != with_ag:
        raise RuntimeError(f"ascend_graph plugin {'active' if active else 'inactive'} where it must not be")


def run_config(model: str, model_dir: Path, config: str, rounds: int, work: Path) -> dict[str, Any]:
    with_ag, extra = CONFIGS[config]
    env = _env(with_ag)
    port = free_port()
    dtype = "float32" if model == "tiny" else "bfloat16"
    command = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--served-model-name", "m", "--attention-backend", "TRITON_ATTN"]
    command += ["--max-model-len", "512", "--max-num-seqs", "32", "--dtype", dtype, "--kv-cache-memory-bytes", "8G"]
    command += [] if model == "tiny" else ["--load-format", "dummy"]
    log_path = work / f"{model}-{config}.log"
    started = time.time()
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in CONCURRENCY}
    with open(log_path, "w") as log:
        # cwd outside the checkout: a build left there (ascend_graph.egg-info) would put the plugin on sys.path
        server = subprocess.Popen([*command, *extra], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        try:
            wait_ready(port, server, timeout_s=420)
            startup_s = time.time() - started
            _check_plugin(log_path.read_text(), with_ag)
            for index in range(rounds):
                for concurrency in CONCURRENCY:
                    result = work / f"{model}-{config}-c{concurrency}-r{index}.json"
                    runs[concurrency].append(_bench(model_dir, port, concurrency, result))
        finally:
            stop(server)
    text = log_path.read_text()
    vllm_capture = CAPTURE_LINE.findall(text)
    return {
        "model": model,
        "config": config,
        "server_args": extra,
        "startup_s": startup_s,
        "capture_logged": [{"seconds": int(s), "gib": float(g)} for s, g in vllm_capture],
        "ascend_graph_capture_logged": [
            {"sizes": int(n), "mode": m, "set": int(k), "seconds": float(s)}
            for n, m, k, s in OUR_CAPTURE_LINE.findall(text)
        ],
        "plugin_active": "Platform plugin ascend_graph is activated" in text,
        "runs": {str(c): r for c, r in runs.items()},
        "log_tail": text.splitlines()[-5:],
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def table(result: dict[str, Any]) -> str:
    lines = ["| model | config | c | TPOT p50 ms (median [min-max] of rounds) | TTFT p50 | ITL p99 | tok/s | failed |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for entry in result["configs"]:
        for concurrency, rounds in entry["runs"].items():
            tpot = [r["p50_tpot_ms"] for r in rounds]
            cells = [
                f"{_median(tpot):.2f} [{min(tpot):.2f}-{max(tpot):.2f}]",
                f"{_median([r['p50_ttft_ms'] for r in rounds]):.1f}",
                f"{_median([r['p99_itl_ms'] for r in rounds]):.2f}",
                f"{_median([r['output_throughput'] for r in rounds]):.0f}",
                str(sum(r["failed"] for r in rounds)),
            ]
            lines.append(f"| {entry['model']} | {entry['config']} | {concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny")
    parser.add_argument("--configs", default="eager,stock,ag-sync,ag-forward-async")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="ag-gpu-serve-"))
    result: dict[str, Any] = {
        "benchmark": "vllm bench serve, random 128 in / 128 out, --ignore-eos, max-num-seqs 32, TRITON_ATTN",
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "vllm": subprocess.run(
                [sys.executable, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True
            ).stdout.strip(),
            "git_commit": os.environ.get("AG_COMMIT", "unknown"),
        },
        "prompts_per_concurrency": PROMPTS,
        "rounds": args.rounds,
        "configs": [],
    }
    out = Path(args.out)
    for model in args.models.split(","):
        if model == "tiny":
            from ascend_graph.models.tiny_hf import build_tiny_model_dir

            model_dir = build_tiny_model_dir(work / "tiny")
        else:
            model_dir = build_shape_dir(work / model, model)
        for config in args.configs.split(","):
            try:
                result["configs"].append(run_config(model, model_dir, config, args.rounds, work))
            except Exception as error:  # noqa: BLE001 - record and go on: the call has one budget
                log = work / f"{model}-{config}.log"
                tail = log.read_text().splitlines()[-30:] if log.exists() else []
                result.setdefault("errors", []).append({"model": model, "config": config, "error": repr(error)})
                print(f"FAILED {model} {config}: {error!r}\n" + "\n".join(tail), flush=True)
            out.write_text(json.dumps(result, indent=1))
            print(f"done {model} {config} at {time.strftime('%H:%M:%S')}", flush=True)
    print(table(result))


if __name__ == "__main__":
    main()
