"""One process of the decode-step profiler (bench/gpu_profile.py starts it): one `LLM()` of one configuration,
every batch size, its figures written to the job's result file after each batch (a process killed at the time
limit keeps the batches it finished).

The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0: vLLM 0.26's `InprocClient`, whose `EngineCore`
drives a `UniProcExecutor`; that executor supports async scheduling, so the default stays on), hence torch.profiler
here sees the worker's kernels: CUPTI's activity records are per process, whatever thread or stream launched them.
The process checks that the engine is in process and records whether async scheduling is on.

Per batch B (B prompts of 128 tokens, greedy, --ignore-eos): a warm-up; `inner` pairs of (1 output token,
`tokens` output tokens), each pair giving one decode step time; then two profiled runs of the same prompts with 2 and
2 + `profile_steps` output tokens, whose difference is `profile_steps` decode steps only (bench/profile_trace.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script: bench/ is sys.path[0]; its siblings import as bench.*, with the checkout last on the path.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench.profile_trace import TraceFigures, decode_step_ms, per_step, trace_figures  # noqa: E402

PROMPT_TOKENS = 128
MAX_MODEL_LEN = 512


def prompt_ids(batch: int, seed: int, vocab: int) -> list[list[int]]:
    """Deterministic prompts, different per seed (no prefix cache is on, but distinct prompts all the same)."""
    return [[(seed * 7919 + row * 131 + col) % vocab for col in range(PROMPT_TOKENS)] for row in range(batch)]


# (module, class) whose capture_model is the start-up capture: vLLM's V1 and V2 runners, ascend_graph's (it calls
# the host's once per static set). Only the outermost call is timed, so each capture counts once.
CAPTURE_METHODS = (
    ("vllm.v1.worker.gpu_model_runner", "GPUModelRunner"),
    ("vllm.v1.worker.gpu.model_runner", "GPUModelRunner"),
    ("ascend_graph.vllm_plugin.gpu_runner", "StaticSetsRunner"),
)


def _timed(original: Any, captures: list[dict[str, Any]], depth: list[int]) -> Any:
    """`original` (a capture_model) wrapped: the outermost call's seconds and returned bytes go to `captures`."""
    import functools

    @functools.wraps(original)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        start = time.perf_counter()
        try:
            returned = original(self, *args, **kwargs)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            entry = {"seconds": round(time.perf_counter() - start, 3), "profile_only": bool(kwargs.get("profile_only"))}
            entry["bytes"] = returned if isinstance(returned, int) else None
            captures.append(entry)
        return returned

    return timed


def time_captures(with_ag: bool) -> list[dict[str, Any]]:
    """Wrap the runners' capture_model (engine in process: the worker's classes are this process's) to time each
    start-up capture and keep what it returns (vLLM: graph memory in bytes, from the device's free memory, as its
    log line's GiB but not rounded); the list fills while LLM() starts. The same instrument for every config."""
    import importlib

    captures: list[dict[str, Any]] = []
    depth = [0]  # shared by every wrapper: ascend_graph's capture_model calls vLLM's
    for module_name, class_name in CAPTURE_METHODS:
        if module_name.startswith("ascend_graph") and not with_ag:
            continue
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except Exception as error:  # noqa: BLE001 - a runner this vLLM build lacks (V1 only, CPU): not timed, said
            captures.append({"not_timed": f"{module_name}.{class_name}: {type(error).__name__}: {error}"[:300]})
            continue
        if "capture_model" in cls.__dict__:
            cls.capture_model = _timed(cls.__dict__["capture_model"], captures, depth)
    return captures


def _build_llm(job: dict[str, Any]) -> Any:
    from vllm import LLM

    extra: dict[str, Any] = {"load_format": "dummy"} if job["model"] != "tiny" else {}
    if job["attention"]:
        extra["attention_config"] = {"backend": job["attention"]}
    return LLM(
        model=job["model_dir"],
        dtype="float32" if job["model"] == "tiny" else "bfloat16",
        seed=0,
        max_model_len=MAX_MODEL_LEN,
        max_num_seqs=max(job["batches"]),
        enable_prefix_caching=False,
        kv_cache_memory_bytes=job["kv_cache_bytes"],
        gpu_memory_utilization=job["gpu_memory_utilization"],
        **extra,
        **job["config"]["llm_args"],
    )


def _engine_facts(llm: Any, with_ag: bool) -> dict[str, Any]:
    """Where the engine runs, async scheduling, the platform, and ascend_graph's capture report."""
    from vllm.platforms import current_platform

    engine = llm.llm_engine
    facts: dict[str, Any] = {
        "engine_client": type(engine.engine_core).__name__,
        "async_scheduling": engine.vllm_config.scheduler_config.async_scheduling,
        "platform": type(current_platform).__name__,
        "cudagraph_capture_sizes": engine.vllm_config.compilation_config.cudagraph_capture_sizes,
    }
    if with_ag:
        from ascend_graph.vllm_plugin import worker_graphs

        facts["ascend_graph_report"] = llm.collective_rpc(worker_graphs)[0]
    return facts


def _synchronize() -> None:
    """Wait for the device (the CPU lane, where the tests run this process, has none to wait for)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Generator:
    """`LLM.generate` of token prompts with a fixed number of output tokens, timed."""

    def __init__(self, llm: Any) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.llm, self.params, self.prompt = llm, SamplingParams, TokensPrompt
        self.vocab = llm.llm_engine.model_config.get_vocab_size()

    def run(self, batch: int, tokens: int, seed: int) -> float:
        prompts = [self.prompt(prompt_token_ids=ids) for ids in prompt_ids(batch, seed, self.vocab)]
        params = self.params(max_tokens=tokens, temperature=0, ignore_eos=True)
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        produced = {len(output.outputs[0].token_ids) for output in outputs}
        if produced != {tokens}:  # a step count off would make every per-step figure wrong
            raise RuntimeError(f"asked {tokens} output tokens per prompt, got {sorted(produced)}")
        return elapsed

    def profiled(self, batch: int, tokens: int, seed: int, trace_dir: Path) -> TraceFigures:
        """One run under torch.profiler (CUDA activity only); its chrome trace parsed, then deleted. Without CUDA
        (the CPU lane's test of this process) CPU activity, which holds no kernels."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        activity = ProfilerActivity.CUDA if torch.cuda.is_available() else ProfilerActivity.CPU
        _synchronize()
        with profile(activities=[activity]) as prof:
            self.run(batch, tokens, seed)
            _synchronize()
        path = trace_dir / f"trace-{batch}-{tokens}.json"
        prof.export_chrome_trace(str(path))
        figures = trace_figures(json.loads(path.read_text()))
        path.unlink()
        return figures


def measure_batch(generator: Generator, batch: int, job: dict[str, Any], trace_dir: Path) -> dict[str, Any]:
    """Step times of `inner` pairs, then the profiled decode steps, for one batch size."""
    generator.run(batch, 16, 0)  # warm-up: this batch's prefill and decode shapes once
    step_ms = []
    for pair in range(job["inner"]):
        prefill = generator.run(batch, 1, 1 + pair)
        full = generator.run(batch, job["tokens"], 1001 + pair)
        step_ms.append(round(decode_step_ms(full, prefill, job["tokens"]), 4))
    short = generator.profiled(batch, 2, 7, trace_dir)
    long = generator.profiled(batch, 2 + job["profile_steps"], 7, trace_dir)
    return {"step_ms": step_ms, "profile": per_step(long, short, job["profile_steps"]).as_dict()}


def wait_for_go(job: dict[str, Any], result: dict[str, Any]) -> None:
    """The imports (they may overlap the previous process: host only, no device context), then wait until the
    driver says this process is alone on the device."""
    import torch
    import vllm

    result["versions"] = {"torch": torch.__version__, "vllm": vllm.__version__}  # what this process ran with
    result["captures"] = time_captures(job["config"]["with_ag"])
    result["imported_at"] = time.time()
    # a context made before the go would take device memory while the previous process measures
    result["cuda_initialized_before_go"] = torch.cuda.is_initialized()
    go = Path(job["go_path"]) if job.get("go_path") else None
    while go is not None and not go.exists():
        time.sleep(0.05)
    result["went_at"] = time.time()


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    result_path = Path(job["result_path"])
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the parent sets it too; the engine must be in process
    result: dict[str, Any] = {"batches": {}}
    wait_for_go(job, result)
    llm = _build_llm(job)
    result["startup_s"] = round(time.time() - result["went_at"], 2)
    result.update(_engine_facts(llm, job["config"]["with_ag"]))
    import torch

    result["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result_path.write_text(json.dumps(result))
    if result["engine_client"] != "InprocClient":
        raise RuntimeError(f"engine client {result['engine_client']}: the profiler would not see the worker")
    generator = Generator(llm)
    trace_dir = Path(tempfile.mkdtemp(prefix="ag-profile-"))
    generator.profiled(1, 2, 3, trace_dir)  # the process's first profiler session pays CUPTI's set-up
    for batch in job["batches"]:
        result["batches"][str(batch)] = figures = measure_batch(generator, batch, job, trace_dir)
        if torch.cuda.is_available() and figures["profile"]["kernels_per_step"] < 1:
            # a decode step launches hundreds of kernels: none seen means the profiler missed them (graph replays)
            result.setdefault("warnings", []).append(f"B={batch}: no kernels per decode step seen by the profiler")
        result["measured_at"] = time.time()
        result_path.write_text(json.dumps(result))
        print(f"profile_child: batch {batch} done: {result['batches'][str(batch)]['step_ms']} ms", flush=True)
    shutil.rmtree(trace_dir, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is on disk: skip the engine's shutdown (seconds per process). The device's memory goes with the
    # process, and the driver lets the next process go only after this exit.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
