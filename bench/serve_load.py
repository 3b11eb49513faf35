"""Bounded load test of `ascend-graph serve` (vLLM's OpenAI server) on 127.0.0.1 in graph mode "forward-async".

Fires a fixed, seeded plan of requests (completions, chat completions, streamed completions, streamed chat, and
streamed completions whose client goes away after a few chunks: half close the stream, half cancel the task) with
at most `concurrency` in flight, each bounded by a timeout, the whole run bounded too. Every request that was not
meant to disconnect must finish with exactly `max_tokens` tokens (ignore_eos) and finish_reason "length"; the
greedy (temperature 0) ones are answered again one at a time after the load and must give the same text. Then the
server must still answer, its /metrics must show nothing left running or waiting and the disconnects counted as
aborts, and its log must hold no traceback or ERROR line. One JSON with environment, settings, counts, latency
percentiles and the verdict. `--mode stock` serves the same plan with vLLM's own CLI and no plugin loaded (stock
vLLM's graphs and async scheduling), to tell vLLM's own behaviour under load from ascend_graph's. `--mode sync-k4`
runs bursts of 4 decode steps per host round trip (decode_steps 4, docs/multistep.md); there no request asks for
logprobs under load (they would run one step per round trip); the greedy check compares the texts with those of
the one-at-a-time replay, which asks for logprobs and so runs without bursts (K = 1), and the streams' tokens per
text chunk show the bursts (one token per chunk without them).

    python -m bench.serve_load --out bench/results/load_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import random
import re
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ascend_graph.vllm_plugin.server import served
from bench.common import git_commit

GRAPH_CC = '{"cudagraph_mode": "FULL_AND_PIECEWISE", "cudagraph_capture_sizes": [1, 2, 4, 8]}'
# max-num-seqs 8 = the largest capture size: every decode batch replays a captured graph (none falls back to eager),
# and with 64 clients up to 56 requests wait in vLLM's queue, so disconnects hit running and waiting requests alike.
# max-model-len 256 holds the longest prompt (~120 tokens) plus 48 new tokens; float32 as the other CPU-lane runs.
BASE_ARGS = ["--max-model-len", "256", "--dtype", "float32", "--max-num-seqs", "8"]
MODE_ARGS = {  # "eager" is the baseline without graph mode, to tell vLLM's own behaviour from ascend_graph's
    "forward-async": ["-cc", GRAPH_CC, "--additional-config", '{"ascend_graph": {"mode": "forward-async"}}'],
    "sync": ["-cc", GRAPH_CC, "--additional-config", '{"ascend_graph": {"mode": "sync"}}'],
    # Bursts of 4 decode steps per host round trip (docs/multistep.md); the platform turns async scheduling off.
    "sync-k4": ["-cc", GRAPH_CC, "--additional-config", '{"ascend_graph": {"mode": "sync", "decode_steps": 4}}'],
    "eager": ["--enforce-eager"],
    "stock": ["-cc", GRAPH_CC],  # vLLM's own server, graphs and runner: no plugin loaded
}
# A batch with a request that asks for logprobs runs one decode step per round trip (multistep.py): with half the
# requests greedy and asking for them, nearly no burst would run. In these modes no request asks for logprobs under
# load and the greedy check compares texts (with a replay that asks for them, so runs K = 1): a mismatch cannot be
# explained as a near tie, every one is unexplained.
NO_LOGPROBS_MODES = ("sync-k4",)
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_USE_AOT_COMPILE": "0"}
STATUSES = ("ok", "disconnected", "wrong", "lost", "server_error", "client_error", "timeout")
KINDS = ("completion", "chat", "stream", "stream_chat", "disconnect")
WORDS = "the quick brown fox jumps over lazy dog graph mode captures a decode step once and replays it".split()
SUCCESS = "vllm:request_success_total"  # counts engine-side finishes; a client abort is not counted (vLLM 0.32)
# Greedy answers under load may part from their one-at-a-time replay where the two best tokens were this close (in
# nats): a batch of another size reduces in another order, stock vLLM included (vLLM is not batch-invariant by
# default). Such a mismatch is reported as a near tie; any other one fails the verdict.
TIE_NATS = 1e-3
ERROR_LINE = re.compile(r"Traceback|\bERROR\b|EngineDeadError|EngineCore.*(died|failed)")


@dataclasses.dataclass(frozen=True)
class Request:
    index: int
    kind: str
    prompt: str
    max_tokens: int
    temperature: float
    disconnect_after: int = 0  # chunks read before the client goes away (kind "disconnect")
    disconnect_by: str = ""  # "close": close the stream; "cancel": cancel the reading task
    logprobs: bool = True  # greedy requests ask for the top two logprobs (for the greedy check)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclasses.dataclass
class Outcome:
    index: int
    kind: str
    status: str  # ok | disconnected | wrong | lost | server_error | client_error | timeout
    latency_s: float
    ttft_s: float | None = None
    text: str = ""
    detail: str = ""
    steps: list[Step] | None = None  # greedy requests: the chosen token and the top two at each position
    chunks: int = 0  # streamed chunks that carried text (tokens per chunk > 1: several tokens per round trip)


Step = tuple[str, dict[str, float]]  # (chosen token, {token: logprob} of the chosen one and the best others)


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    tokens: int
    finish: str | None
    ttft_s: float | None
    steps: list[Step] | None
    chunks: int = 0


def make_plan(requests: int, disconnect_fraction: float, seed: int, logprobs: bool = True) -> list[Request]:
    """A seeded mix: `disconnect_fraction` disconnecting streams, the rest spread over the four other kinds."""
    rng = random.Random(seed)
    disconnects = set(rng.sample(range(requests), max(1, round(requests * disconnect_fraction))))
    plan = []
    for index in range(requests):
        kind = "disconnect" if index in disconnects else KINDS[index % 4]
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60)))
        max_tokens = rng.randint(8, 48) if kind == "disconnect" else rng.randint(4, 48)
        temperature = 0.0 if rng.random() < 0.5 else 0.8
        after, by = (rng.randint(1, 3), rng.choice(("close", "cancel"))) if kind == "disconnect" else (0, "")
        plan.append(Request(index, kind, prompt, max_tokens, temperature, after, by, logprobs))
    return plan


def _create_kwargs(request: Request, stream: bool) -> dict[str, Any]:
    chat = request.kind in ("chat", "stream_chat")
    kwargs: dict[str, Any] = {
        "model": "tiny",
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "extra_body": {"ignore_eos": True},
    }
    kwargs.update({"messages": [{"role": "user", "content": request.prompt}]} if chat else {"prompt": request.prompt})
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    if request.greedy and request.logprobs:  # the top two at each position, tokens named by id, for the greedy check
        kwargs.update({"logprobs": True, "top_logprobs": 2} if chat else {"logprobs": 2})
        kwargs["extra_body"]["return_tokens_as_token_ids"] = True
    return kwargs


def _steps(logprobs: Any, chat: bool) -> list[Step]:
    """(chosen token, {token: logprob}) per position of one choice's logprobs (chat or completion form)."""
    if logprobs is None:
        return []
    if chat:
        return [
            (item.token, {item.token: item.logprob} | {top.token: top.logprob for top in item.top_logprobs})
            for item in logprobs.content or []
        ]
    return [
        (token, {token: chosen} | dict(top or {}))
        for token, chosen, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True)
    ]


async def _send(client: Any, request: Request) -> Answer:
    """The answer to one request that runs to its end (steps only for a greedy one)."""
    chat = request.kind in ("chat", "stream_chat")
    endpoint = client.chat.completions if chat else client.completions
    started = time.perf_counter()
    if request.kind in ("completion", "chat"):
        response = await endpoint.create(**_create_kwargs(request, stream=False))
        choice = response.choices[0]
        text = choice.message.content if chat else choice.text
        steps = _steps(choice.logprobs, chat) if request.greedy else None
        return Answer(text or "", response.usage.completion_tokens, choice.finish_reason, None, steps)
    parts, steps, tokens, finish, ttft, chunks = [], [], -1, None, None, 0
    async for chunk in await endpoint.create(**_create_kwargs(request, stream=True)):
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            ttft = ttft if ttft is not None else time.perf_counter() - started
            parts.append((choice.delta.content if chat else choice.text) or "")
            chunks += bool(parts[-1])
            steps.extend(_steps(choice.logprobs, chat))
            finish = choice.finish_reason or finish
    return Answer("".join(parts), tokens, finish, ttft, steps if request.greedy else None, chunks)


async def _disconnect(client: Any, request: Request) -> int:
    """Read `disconnect_after` chunks of a streamed completion, then go away; returns the chunks read."""
    got_enough = asyncio.Event()
    read = 0

    async def consume() -> None:
        nonlocal read
        stream = await client.completions.create(**_create_kwargs(request, stream=True))
        chunks = stream.__aiter__()
        try:
            while read < request.disconnect_after:
                await chunks.__anext__()
                read += 1
            got_enough.set()
            if request.disconnect_by == "cancel":
                await asyncio.Event().wait()  # park with the stream open until the task is cancelled
        except StopAsyncIteration:
            got_enough.set()  # fewer chunks than planned (the stream ended first) are reported as "wrong"
        finally:  # close the chunk generators first, so none is finalized later while another still runs
            await chunks.aclose()
            await stream.close()  # closes the HTTP response: the server sees the client go away

    task = asyncio.create_task(consume())
    waiter = asyncio.create_task(got_enough.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # re-raises a request error
    else:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return read


async def run_one(client: Any, request: Request, timeout_s: float) -> Outcome:
    import openai

    started = time.perf_counter()

    def outcome(status: str, **fields: Any) -> Outcome:
        return Outcome(request.index, request.kind, status, time.perf_counter() - started, **fields)

    try:
        if request.kind == "disconnect":
            read = await asyncio.wait_for(_disconnect(client, request), timeout_s)
            good = read == request.disconnect_after
            return outcome("disconnected" if good else "wrong", detail=f"read {read} chunks")
        answer = await asyncio.wait_for(_send(client, request), timeout_s)
    except (TimeoutError, asyncio.TimeoutError, openai.APITimeoutError) as error:
        return outcome("timeout", detail=repr(error))
    except openai.APIStatusError as error:
        return outcome("server_error" if error.status_code >= 500 else "client_error", detail=repr(error)[:300])
    except openai.APIConnectionError as error:
        return outcome("lost", detail=repr(error)[:300])
    except openai.APIError as error:  # an error event inside a stream that had started with 200
        return outcome("server_error", detail=repr(error)[:300])
    except Exception as error:  # connection reset, protocol error, ...: the request is lost
        return outcome("lost", detail=repr(error)[:300])
    if answer.tokens != request.max_tokens or answer.finish != "length":
        detail = f"{answer.tokens} tokens, finish_reason {answer.finish!r}"
        return outcome("wrong", ttft_s=answer.ttft_s, text=answer.text, detail=detail)
    return outcome("ok", ttft_s=answer.ttft_s, text=answer.text, steps=answer.steps, chunks=answer.chunks)


async def run_load(port: int, plan: list[Request], concurrency: int, timeout_s: float) -> dict[str, Any]:
    """All requests of `plan`, at most `concurrency` in flight; outcomes in plan order, and the peak in flight."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    in_flight = peak = 0

    async def bounded(request: Request) -> Outcome:
        nonlocal in_flight, peak
        async with gate:
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await run_one(client, request, timeout_s)
            finally:
                in_flight -= 1

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(bounded(request) for request in plan))
    duration = time.perf_counter() - started
    await client.close()
    return {"outcomes": list(outcomes), "duration_s": duration, "peak_in_flight": peak}


def divergence(load: list[Step], alone: list[Step]) -> dict[str, Any] | None:
    """Where two greedy answers first part, and whether the two tokens were a near tie (within TIE_NATS) in either
    answer's own logprobs; None when the tokens agree."""
    for position, ((took, load_top), (alone_took, alone_top)) in enumerate(zip(load, alone, strict=False)):
        if took == alone_took:
            continue
        gaps = [
            top[a] - top[b] for top, a, b in ((load_top, took, alone_took), (alone_top, alone_took, took)) if b in top
        ]
        gap = min(gaps) if gaps else None  # None: the other token was not even second best
        return {
            "position": position,
            "load": took,
            "alone": alone_took,
            "gap_nats": gap,
            "near_tie": gap is not None and gap <= TIE_NATS,
        }
    if len(load) != len(alone):
        return {
            "position": min(len(load), len(alone)),
            "load": None,
            "alone": None,
            "gap_nats": None,
            "near_tie": False,
        }
    return None


async def greedy_reference(port: int, plan: list[Request], outcomes: list[Outcome]) -> dict[str, Any]:
    """Send each greedy request that finished under load again, alone, non-streamed, and compare the tokens: a
    mismatch where the two tokens were a near tie is counted apart; the others are `unexplained`."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    checked, by_tokens, mismatches = 0, 0, []
    for request, outcome in zip(plan, outcomes, strict=True):
        if not request.greedy or outcome.status != "ok":
            continue
        # Always with logprobs: in NO_LOGPROBS_MODES that runs the replay one decode step per round trip (no burst),
        # so the check compares the bursts' text under load with K = 1's.
        kind = "chat" if request.kind in ("chat", "stream_chat") else "completion"
        alone = dataclasses.replace(request, kind=kind, logprobs=True)
        answer = await _send(client, alone)
        checked += 1
        by_tokens += bool(outcome.steps and answer.steps)
        if not outcome.steps or not answer.steps:  # no logprobs came back: the texts decide
            where = None if answer.text == outcome.text else {"near_tie": False, "detail": "no logprobs"}
        else:
            where = divergence(outcome.steps, answer.steps)
        if where is not None:
            mismatches.append(
                {
                    "index": request.index,
                    "kind": request.kind,
                    **where,
                    "load_text": outcome.text,
                    "alone_text": answer.text,
                }
            )
    await client.close()
    near_ties = sum(mismatch["near_tie"] for mismatch in mismatches)
    unexplained = [mismatch for mismatch in mismatches if not mismatch["near_tie"]]
    return {
        "checked": checked,
        "compared_by_tokens": by_tokens,
        "mismatches": len(mismatches),
        "near_ties": near_ties,
        "unexplained": len(unexplained),
        "tie_nats": TIE_NATS,
        "examples": (unexplained + mismatches)[:5],
    }


def read_metrics(port: int) -> dict[str, float]:
    """The vLLM gauges and counters this test reads, summed over labels other than finished_reason."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", SUCCESS)
    figures: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if line.startswith("#") or name not in wanted:
            continue
        reason = re.search(r'finished_reason="(\w+)"', line)
        key = f"{name}[{reason.group(1)}]" if reason else name
        figures[key] = figures.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return figures


async def drained_metrics(port: int, wait_s: float = 30.0) -> dict[str, Any]:
    """/metrics once nothing is running or waiting any more (or after `wait_s`), with the seconds it took."""
    started = time.perf_counter()
    while True:
        figures = read_metrics(port)
        busy = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
        idle = all(figures.get(name, 0.0) == 0 for name in busy)  # aborted requests gave their KV blocks back
        if idle or time.perf_counter() - started > wait_s:
            return {"drained": idle, "seconds_to_drain": time.perf_counter() - started, **figures}
        await asyncio.sleep(0.5)


async def alive_check(port: int) -> dict[str, Any]:
    """/health answers 200 and one greedy completion gives exactly the tokens asked for."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        health = response.status
    import openai

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    probe = Request(-1, "completion", "Hello, my name is", 16, 0.0)
    answer = await _send(client, probe)
    await client.close()
    ok = health == 200 and answer.tokens == 16 and answer.finish == "length" and bool(answer.text)
    return {"health_status": health, "completion_tokens": answer.tokens, "finish_reason": answer.finish, "alive": ok}


def summarize(plan: list[Request], outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts per kind and status, latency / TTFT percentiles per kind, and a few failing requests."""
    import numpy as np

    def percentiles(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 90, 99)} | {"max": max(values)}

    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [outcome for outcome in outcomes if outcome.kind == kind]
        statuses = sorted({outcome.status for outcome in mine})
        per_kind[kind] = {
            "sent": len(mine),
            "greedy": sum(plan[outcome.index].greedy for outcome in mine),
            **{status: sum(outcome.status == status for outcome in mine) for status in statuses},
            "latency_s": percentiles([outcome.latency_s for outcome in mine]),
            "ttft_s": percentiles([outcome.ttft_s for outcome in mine if outcome.ttft_s is not None]),
        }
        streamed = [outcome for outcome in mine if outcome.chunks]
        if streamed:  # tokens per text chunk of the finished streams: > 1 where tokens came several at a time
            tokens = sum(plan[outcome.index].max_tokens for outcome in streamed)
            per_kind[kind]["tokens_per_chunk"] = tokens / sum(outcome.chunks for outcome in streamed)
    totals = {status: sum(outcome.status == status for outcome in outcomes) for status in STATUSES}
    failures = [dataclasses.asdict(outcome) for outcome in outcomes if outcome.status not in ("ok", "disconnected")]
    return {"per_kind": per_kind, "totals": totals, "failures": failures[:20]}


def scan_log(log_path: Path) -> dict[str, Any]:
    """ERROR / traceback lines while serving, and separately those after the shutdown began (SIGTERM at the end)."""
    lines = log_path.read_text(errors="replace").splitlines()
    shutdown = next((number for number, line in enumerate(lines) if "[shutdown]" in line), len(lines))
    serving = [line for line in lines[:shutdown] if ERROR_LINE.search(line)]
    at_shutdown = [line for line in lines[shutdown:] if ERROR_LINE.search(line)]
    return {
        "lines": len(lines),
        "error_lines": len(serving),
        "error_examples": serving[:20],
        "shutdown_error_lines": len(at_shutdown),
        "shutdown_error_examples": at_shutdown[:10],
        "forward_async_sync_steps": sum("a step runs sync" in line for line in lines),
    }


def environment() -> dict[str, Any]:
    import openai
    import torch
    import vllm

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "vllm": vllm.__version__,
        "openai": openai.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    totals, after = result["summary"]["totals"], result["after"]
    delta = after["metrics_delta"]
    finished = delta.get(f"{SUCCESS}[length]", 0.0)  # a disconnect the engine finished first counts here too
    others = sum(value for key, value in delta.items() if key.startswith(SUCCESS) and not key.endswith("[length]"))
    checks = {
        "no_lost": totals["lost"] == 0 and totals["timeout"] == 0,
        "no_server_errors": totals["server_error"] == 0 and totals["client_error"] == 0,
        "all_correct": totals["wrong"] == 0 and result["greedy_check"]["unexplained"] == 0,
        "engine_finishes_match": "error" not in after["metrics"]
        and totals["ok"] <= finished <= totals["ok"] + totals["disconnected"]
        and others == 0,
        "engine_drained": after["metrics"]["drained"],
        "server_alive": after["alive"]["alive"],
        "no_error_lines_in_log": result["server_log"]["error_lines"] == 0,
    }
    return {"pass": all(checks.values()), **checks}


async def _checked(check: Any, failed: dict[str, Any]) -> dict[str, Any]:
    """The result of one after-load check, or `failed` with the error when the server no longer answers."""
    try:
        return await check
    except Exception as error:  # a dead server: the verdict fails on `failed`, the JSON is still written
        return {**failed, "error": repr(error)[:300]}


async def _exercise(port: int, plan: list[Request], args: argparse.Namespace) -> dict[str, Any]:
    before = read_metrics(port)
    load = await asyncio.wait_for(run_load(port, plan, args.concurrency, args.request_timeout), args.total_timeout)
    metrics = await _checked(drained_metrics(port), {"drained": False})
    delta = {key: metrics.get(key, 0.0) - before.get(key, 0.0) for key in before if key.endswith("]")}
    greedy = await _checked(
        greedy_reference(port, plan, load["outcomes"]), {"checked": 0, "mismatches": None, "unexplained": None}
    )
    alive = await _checked(alive_check(port), {"alive": False})
    after = {"metrics": metrics, "metrics_delta": delta, "alive": alive}
    return {"load": load, "greedy_check": greedy, "after": after}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    model_dir = build_tiny_model_dir(work / "tiny-qwen3")
    plan = make_plan(args.requests, args.disconnect_fraction, args.seed, args.mode not in NO_LOGPROBS_MODES)
    log_path = work / "server.log"
    started = time.time()
    server_args = [*BASE_ARGS, *MODE_ARGS[args.mode], *args.server_args.split()]
    stock = args.mode == "stock"
    with served(model_dir, server_args, log_path, SERVER_ENV, plugin=not stock) as port:
        startup_s = time.time() - started
        exercised = asyncio.run(_exercise(port, plan, args))
    load = exercised.pop("load")
    result = {
        "benchmark": f"bounded load test of {'stock vLLM' if stock else 'ascend-graph serve'}, tiny Qwen3 (2 layers)",
        "environment": environment(),
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "disconnect_fraction": args.disconnect_fraction,
            "request_timeout_s": args.request_timeout,
            "total_timeout_s": args.total_timeout,
            "seed": args.seed,
            "mode": args.mode,
            "server_args": server_args,
            "server_env": SERVER_ENV,
            "plugin": not stock,
            "greedy_logprobs": args.mode not in NO_LOGPROBS_MODES,
        },
        "plan_kinds": [request.kind for request in plan],
        "startup_s": startup_s,
        "duration_s": load["duration_s"],
        "peak_in_flight": load["peak_in_flight"],
        "requests_per_s": len(plan) / load["duration_s"],
        "summary": summarize(plan, load["outcomes"]),
        **exercised,
        "server_log": scan_log(log_path),
    }
    finished = result["after"]["metrics_delta"].get(f"{SUCCESS}[length]", 0.0)
    # Disconnects whose request the engine had not finished yet: vLLM aborted them (not in request_success_total).
    unread = "error" in result["after"]["metrics"]  # /metrics did not answer after the load
    result["after"]["disconnects_aborted_in_engine"] = None if unread else len(plan) - finished
    result["verdict"] = verdict(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    greedy = result["greedy_check"]
    print(f"{'kind':<12}{'sent':>6}{'ok':>6}{'disc':>6}{'fail':>6}{'p50 s':>9}{'p99 s':>9}")
    for kind, row in result["summary"]["per_kind"].items():
        failed = row["sent"] - row.get("ok", 0) - row.get("disconnected", 0)
        latency = row["latency_s"] or {"p50": float("nan"), "p99": float("nan")}
        print(
            f"{kind:<12}{row['sent']:>6}{row.get('ok', 0):>6}{row.get('disconnected', 0):>6}{failed:>6}"
            f"{latency['p50']:>9.2f}{latency['p99']:>9.2f}"
        )
    print(
        f"duration {result['duration_s']:.1f} s, peak in flight {result['peak_in_flight']}, "
        f"totals {result['summary']['totals']}"
    )
    per_chunk = {
        kind: round(row["tokens_per_chunk"], 2)
        for kind, row in result["summary"]["per_kind"].items()
        if "tokens_per_chunk" in row
    }
    print(f"tokens per streamed text chunk {per_chunk}")
    aborted = result["after"]["disconnects_aborted_in_engine"]
    print(f"disconnects aborted in the engine {aborted} (the rest had finished before the client went away)")
    print(
        f"greedy check {greedy['checked']} checked, {greedy['mismatches']} mismatches "
        f"({greedy.get('near_ties')} at a near tie, {greedy['unexplained']} unexplained)"
    )
    log = result["server_log"]
    print(f"server log error lines {log['error_lines']} (at shutdown {log['shutdown_error_lines']})")
    print(f"verdict {result['verdict']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--disconnect-fraction", type=float, default=0.15)
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds, each request")
    parser.add_argument("--total-timeout", type=float, default=1200.0, help="seconds, the whole load")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=tuple(MODE_ARGS), default="forward-async")
    parser.add_argument("--out", default=".out/load_cpu.json")
    parser.add_argument("--work-dir", default=None, help="for the tiny model and the server log (default: a temp dir)")
    parser.add_argument(
        "--server-args",
        default="",
        help="more arguments for the server, one string (GPU lane: '--attention-backend TRITON_ATTN')",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or not 0.0 <= args.disconnect_fraction < 1.0:
        parser.error("--requests and --concurrency must be >= 1 and --disconnect-fraction in [0, 1)")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ascend-graph-load-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(args, work)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"wrote {out} (server log {work / 'server.log'})")
    return result


if __name__ == "__main__":
    raise SystemExit(0 if main()["verdict"]["pass"] else 1)
