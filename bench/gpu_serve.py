"""Serving benchmark on the GPU lane: `vllm serve` + `vllm bench serve` (vLLM 0.26.0 for CUDA, the offline bundle),
stock vLLM against ascend_graph, side by side in one call. Run by `bench/gpu_lane.sh bench ...` on the device.

Each configuration is one server on 127.0.0.1; the servers of one model start together and stay up side by side
(the H200 holds them all), and are benchmarked one at a time: `--rounds` rounds, each running every configuration
at concurrency 1, 8 and 32 (the order of configurations rotated per round), random 128 in / 128 out, --ignore-eos.
Rounds stop early, recorded, when the call's time (--stop-after-s) runs out. Stock vLLM runs without
ascend_graph on PYTHONPATH (no plugin: vLLM's CUDA graphs, async scheduling, inductor); ascend_graph configurations
put the installed project first. Model shapes: the tiny Qwen3 of the tests (float32), and
the Qwen3-0.6B and Qwen3-8B shapes with dummy weights (`--load-format dummy`), whose tokenizer is a word-level one
of the shape's full vocabulary built here (the random dataset decodes and re-encodes ids one to one).

    python3 bench/gpu_serve.py --models tiny,qwen3-0.6b --configs stock,ag-sync,ag-forward-async --out $OUT/x.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
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
    "ag-noopts": (True, []),  # installed, not asked for: must serve as stock vLLM does
    "ag-sync": (True, ["--no-async-scheduling", AG, '{"ascend_graph": {"mode": "sync"}}']),
    "ag-forward-async": (True, [AG, '{"ascend_graph": {"mode": "forward-async"}}']),
    "ag-forward-async-passes": (True, [AG, '{"ascend_graph": {"mode": "forward-async", "passes": "all"}}']),
    # ablation: what separates the figures above
    "stock-no-async": (False, ["--no-async-scheduling"]),
    "ag-compiler-vllm-runner-sync": (
        True,
        ["--no-async-scheduling", AG, '{"ascend_graph": {"mode": "sync", "graph_runner": "vllm"}}'],
    ),
    "ag-compiler-vllm-runner-async": (
        True,
        [AG, '{"ascend_graph": {"mode": "forward-async", "graph_runner": "vllm"}}'],
    ),
}
TP2 = ["--tensor-parallel-size", "2"]  # 2 GPUs (nvidia-h200-x2): "<config>-tp2" for the configurations above
CONFIGS.update({f"{name}-tp2": (with_ag, [*args, *TP2]) for name, (with_ag, args) in list(CONFIGS.items())})
sys.path.insert(0, os.environ.get("AG_SITE", str(Path(__file__).resolve().parents[1])))  # the installed project
from ascend_graph.vllm_plugin.server import free_port, stop  # noqa: E402

CONCURRENCY = (1, 8, 32)
PROMPTS = {1: 8, 8: 32, 32: 64}
CAPTURE_LINE = re.compile(r"Graph capturing finished in (\d+) secs, took ([\d.]+) GiB")
OUR_CAPTURE_LINE = re.compile(
    r"ascend_graph: captured (\d+) (\w+) sizes \(static set (\d)\) in ([\d.]+) s, graph pool \+([\d.]+) GiB"
)


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


def _bench(model_dir: Path, server: Server, concurrency: int, result: Path) -> dict[str, Any]:
    """One `vllm bench serve` run, in this process (vLLM is imported once, not per run)."""
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = ["--backend", "vllm", "--base-url", f"http://127.0.0.1:{server.port}", "--model", server.name]
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


@dataclasses.dataclass
class Server:
    model: str
    config: str
    name: str
    with_ag: bool
    extra: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen
    started: float
    startup_s: float | None = None
    error: str | None = None
    bench_errors: list[str] = dataclasses.field(default_factory=list)


def start_server(model: str, model_dir: Path, config: str, work: Path, taken: set[int]) -> Server:
    with_ag, extra = CONFIGS[config]
    env = _env(with_ag)
    env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"  # servers start together: no pool of compile workers each
    port = free_port()
    while port in taken:  # servers started together: none has bound its port yet when the next one is chosen
        port = free_port()
    taken.add(port)
    name = f"{model}-{config}"  # each server its own model name: a request that reaches another server fails
    dtype = "float32" if model == "tiny" else "bfloat16"
    command = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(model_dir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--served-model-name", name, "--attention-backend", "TRITON_ATTN"]
    command += ["--max-model-len", "512", "--max-num-seqs", "32", "--dtype", dtype]
    # KV cache set in bytes (the same for every configuration; vLLM then skips its memory profiling) and a small
    # utilisation for vLLM's free-memory check at start, so that the servers of one model share the GPU.
    command += ["--kv-cache-memory-bytes", "2G", "--gpu-memory-utilization", "0.08"]
    command += [] if model == "tiny" else ["--load-format", "dummy"]
    log_path = work / f"{model}-{config}.log"
    with open(log_path, "w") as log:
        # cwd outside the checkout: a build left there (ascend_graph.egg-info) would put the plugin on sys.path
        process = subprocess.Popen([*command, *extra], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    return Server(model, config, name, with_ag, extra, port, log_path, process, time.time())


def _healthy(server: Server) -> bool:
    """One look: True once the server answers /health; raises if its process has exited."""
    if server.process.poll() is not None:
        raise RuntimeError(f"vLLM server exited with {server.process.returncode} before it was ready")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _check_name(server: Server) -> None:
    """The port answers with this server's model name (not another server's that took the same port)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/v1/models", timeout=5) as response:
        names = [entry["id"] for entry in json.loads(response.read())["data"]]
    if names != [server.name]:
        raise RuntimeError(f"port {server.port} serves {names}, not {server.name}")


def _await_all(servers: list[Server], timeout_s: float) -> None:
    """Poll every server until each answers /health, exits or times out; failures are recorded, not raised."""
    deadline = time.time() + timeout_s
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            try:
                if not _healthy(server):
                    if time.time() < deadline:
                        continue
                    raise TimeoutError(f"not ready after {timeout_s:.0f} s")
                server.startup_s = time.time() - server.started
                _check_plugin(server.log_path.read_text(), server.with_ag)
                _check_name(server)
            except Exception as error:  # noqa: BLE001 - recorded; the other configurations go on
                server.error = repr(error)
                tail = server.log_path.read_text().splitlines()[-30:]
                print(f"FAILED {server.config}: {server.error}\n" + "\n".join(tail), flush=True)
            waiting.remove(server)
        time.sleep(1)


def run_all(
    model_dirs: dict[str, Path], configs: list[str], rounds: int, work: Path, stop_at: float, hold_until: str = ""
) -> list[dict[str, Any]]:
    """Every (model, configuration) served at once, started together (so start-up and capture times are measured
    under each other's load); then `rounds` rounds, each benchmarking every server at every concurrency, one at a
    time, the order of configurations rotated from round to round."""
    taken: set[int] = set()
    servers = [start_server(model, path, cfg, work, taken) for model, path in model_dirs.items() for cfg in configs]
    runs: dict[int, dict[int, list[dict[str, Any]]]] = {id(s): {c: [] for c in CONCURRENCY} for s in servers}
    try:
        _await_all(servers, timeout_s=max(60.0, stop_at - time.time() - 60))
        live = [s for s in servers if s.error is None]
        print(f"{len(live)} of {len(servers)} servers ready at {time.strftime('%H:%M:%S')}", flush=True)
        while hold_until and not Path(hold_until).exists() and time.time() < stop_at:
            time.sleep(1)  # another job shares the GPU until it writes this file: no benchmark before
        for index in range(rounds):
            for model, path in model_dirs.items():
                mine = [s for s in live if s.model == model]
                for server in mine[index % max(1, len(mine)) :] + mine[: index % max(1, len(mine))]:
                    for concurrency in CONCURRENCY:
                        if time.time() > stop_at:
                            continue  # out of time: this round stays short (the JSON shows the runs each has)
                        result = work / f"{model}-{server.config}-c{concurrency}-r{index}.json"
                        try:
                            runs[id(server)][concurrency].append(_bench(path, server, concurrency, result))
                        except Exception as error:  # noqa: BLE001 - recorded; the other runs go on
                            server.bench_errors.append(f"c{concurrency} round {index}: {error!r}")
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            stop(server.process)  # waits for each (it has been sent SIGTERM already), SIGKILL after a minute
    return [_entry(server, runs[id(server)]) for server in servers]


def _entry(server: Server, runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    text = server.log_path.read_text()
    return {
        "model": server.model,
        "config": server.config,
        "server_args": server.extra,
        "port": server.port,
        "error": server.error,
        "bench_errors": server.bench_errors,
        "startup_s": server.startup_s,
        "capture_logged": [{"seconds": int(s), "gib": float(g)} for s, g in CAPTURE_LINE.findall(text)],
        "ascend_graph_capture_logged": [
            {"sizes": int(n), "mode": m, "set": int(k), "seconds": float(s), "pool_gib": float(g)}
            for n, m, k, s, g in OUR_CAPTURE_LINE.findall(text)
        ],
        "plugin_active": "Platform plugin ascend_graph is activated" in text,
        "runs": {str(c): r for c, r in runs.items() if r},
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
            if not rounds:
                continue
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
    parser.add_argument("--stop-after-s", type=float, default=520, help="no new benchmark run after this")
    parser.add_argument("--hold-until", default="", help="benchmark only once this file exists (a GPU job ends)")
    args = parser.parse_args()
    import torch

    stop_at = time.time() + args.stop_after_s
    work = Path(tempfile.mkdtemp(prefix="ag-gpu-serve-"))
    result: dict[str, Any] = {
        "benchmark": "vllm bench serve, random 128 in / 128 out, --ignore-eos, max-num-seqs 32, TRITON_ATTN; "
        "the servers of one model run side by side (started together), benchmarked one at a time",
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
    model_dirs: dict[str, Path] = {}
    for model in args.models.split(","):
        if model == "tiny":
            from ascend_graph.models.tiny_hf import build_tiny_model_dir

            model_dirs[model] = build_tiny_model_dir(work / "tiny")
        else:
            model_dirs[model] = build_shape_dir(work / model, model)
    result["configs"] = run_all(model_dirs, args.configs.split(","), args.rounds, work, stop_at, args.hold_until)
    out.write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
