"""Decode-step benchmark: ascend_graph against eager, a manual CUDA graph, torch.compile(backend="cudagraphs")
and torch.compile(mode="reduce-overhead"), on Qwen3-shaped decoders with a static KV cache and random weights.

Per (shape, batch, variant) it records every step time (host wall clock around the call plus a device
synchronize, so host launch cost counts), the median, kernels per step (profiler), first-call time (compile +
capture), graph memory, and the largest difference from eager logits. The HBM floor comes from a device-to-device
copy bandwidth measured in the same run. Results: JSON with device, versions, date and every raw figure.

    python bench/bench_backend.py --preset cuda --shapes qwen3-0.6b --out bench/results/backend_h100_0.6b.json
    ascend-graph bench                                  # the CPU lane: tiny shape, eager vs ascend_graph

Variants ending in "+passes" run ascend_graph's fusion passes (all of them) before lowering. With `--rendezvous`
several processes share the device: each compiles its variants at the same time as the others, then they take
turns for everything timed (bench/run_device_passes.sh runs the passes issue's comparison that way).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ascend_graph.backend import GraphCompiled, ascend_graph_backend
from ascend_graph.counters import counters
from ascend_graph.models.qwen3 import SHAPES, Qwen3Decoder, build_decoder
from bench.common import environment
from bench.progress import Progress, plot_decode_step

PRESETS: dict[str, dict[str, Any]] = {
    "cuda": {
        "shapes": ["qwen3-0.6b", "qwen3-8b"],
        "batches": [1, 8, 32, 128],
        "max_seq": 512,
        "iters": 40,
        "dtype": "bfloat16",
        "variants": [
            "eager",
            "manual_graph",
            "cudagraphs",
            "reduce_overhead",
            "ascend_graph_aten",
            "ascend_graph_inductor",
        ],
    },
    # The passes issue's run: what fusion adds, beside reduce-overhead (see bench/run_device_passes.sh).
    "cuda-passes": {
        "shapes": ["qwen3-0.6b", "qwen3-8b"],
        "batches": [1, 32],
        "max_seq": 512,
        "iters": 40,
        "dtype": "bfloat16",
        "variants": [
            "reduce_overhead",
            "ascend_graph_inductor",
            "ascend_graph_inductor+passes",
            "ascend_graph_aten",
            "ascend_graph_aten+passes",
        ],
    },
    "cpu": {
        "shapes": ["tiny"],
        "batches": [1, 2, 4, 8],
        "max_seq": 64,
        "iters": 30,
        "dtype": "float32",
        "variants": ["eager", "ascend_graph_aten"],
    },
}

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def memory_allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated() if device.type == "cuda" else 0


def copy_bandwidth(device: torch.device) -> float | None:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    if device.type != "cuda":
        return None
    source = torch.randn(1 << 28, device=device)  # 1 GiB of float32
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        target.copy_(source)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    bandwidth = 2 * source.nbytes / statistics.median(times)
    del source, target
    torch.cuda.empty_cache()
    return bandwidth


def floor_bytes(model: Qwen3Decoder, batch: int, context: int) -> int:
    """The fewest bytes a decode step must move: every weight once, the KV cache of each sequence's context."""
    shape = model.shape
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = batch * (context + 1) * shape.kv_heads * shape.head_dim * 2 * shape.layers
    return weight_bytes + kv_bytes * model.kv_cache.element_size()


def count_kernels(step: Step, inputs: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    steps = 3
    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(*inputs)
        synchronize(device)
    kernels = [
        event
        for event in prof.events()
        if event.device_type == torch.autograd.DeviceType.CUDA and "memcpy" not in event.name.lower()
    ]
    return len(kernels) / steps


def manual_graph(model: Qwen3Decoder) -> Step:
    """The textbook CUDA graph, one per batch size on first use: static inputs, warm-up on a side stream,
    capture, then copy-in + replay."""
    graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def capture(ids: torch.Tensor, pos: torch.Tensor) -> None:
        static_ids, static_pos = ids.clone(), pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                model(static_ids, static_pos)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_logits = model(static_ids, static_pos)
        graphs[ids.shape[0]] = (graph, static_ids, static_pos, static_logits)

    def step(ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if ids.shape[0] not in graphs:
            capture(ids, pos)
        graph, static_ids, static_pos, static_logits = graphs[ids.shape[0]]
        static_ids.copy_(ids, non_blocking=True)
        static_pos.copy_(pos, non_blocking=True)
        graph.replay()
        return static_logits

    return step


def build_variant(name: str, model: Qwen3Decoder, batches: list[int], reset: bool = True) -> Step:
    """One step per variant serving every batch size. Dynamic shapes, so each compiler compiles once (plus
    dynamo's specialisation of size 1); graphs are recorded per size on first use."""
    if reset:
        torch._dynamo.reset()
    if name == "eager":
        return model
    if name == "manual_graph":
        return manual_graph(model)
    if name == "cudagraphs":
        return torch.compile(model, backend="cudagraphs", dynamic=True)
    if name == "reduce_overhead":
        return torch.compile(model, mode="reduce-overhead", dynamic=True)
    if name.startswith("ascend_graph_"):
        lowering, _, extra = name.removeprefix("ascend_graph_").partition("+")
        if extra not in ("", "passes"):
            raise ValueError(f"unknown variant {name!r}: the only suffix is '+passes'")
        options = {
            "capture_sizes": batches,
            "lowering": lowering,
            "output_mode": "static",
            "pad_values": model.pad_values,
            "passes": "all" if extra else (),
        }
        return torch.compile(model, backend=tracked_backend, dynamic=True, options=options)
    known = sorted({v for preset in PRESETS.values() for v in preset["variants"]})
    raise ValueError(f"unknown variant {name!r}; known: {known}")


def time_steps(step: Step, inputs: tuple[torch.Tensor, ...], iters: int, device: torch.device) -> list[float]:
    for _ in range(3):
        step(*inputs)
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step(*inputs)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def direct_call(batch: int, ids: torch.Tensor, pos: torch.Tensor, live: list[GraphCompiled]) -> Step | None:
    """The ascend_graph piece serving `batch`, called without dynamo's guard evaluation in front of it."""
    pieces = [p for p in live if batch in p.captures or None in p.captures]
    if len(pieces) != 1:
        return None
    piece = pieces[0]
    capture = piece.captures[batch] if batch in piece.captures else piece.captures[None]
    named = {"token_ids": ids, "positions": pos}
    args = []
    for spec, captured in zip(piece.signature.inputs, capture.args, strict=True):
        args.append(batch if spec.kind.value == "symint" else named.get(spec.name, captured))
    return lambda *_: piece(*args)


def run_batch(
    name: str, step: Step, model: Qwen3Decoder, batch: int, context: int, iters: int, device: torch.device
) -> dict[str, Any]:
    row, inputs = first_call(name, step, model, batch, context, device)
    return measure(row, step, inputs, iters, device, list(LIVE_PIECES))


def first_call(
    name: str, step: Step, model: Qwen3Decoder, batch: int, context: int, device: torch.device
) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor]]:
    """The first call (compile + capture), timed, and its difference from eager; the row so far and the inputs."""
    generator = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, model.shape.vocab, (batch,), generator=generator).to(device)
    pos = torch.full((batch,), context, device=device)
    reference = model(ids, pos).float()
    synchronize(device)
    memory_before = memory_allocated(device)
    counts_before = counters()
    start = time.perf_counter()
    out = step(ids, pos)
    synchronize(device)
    seconds = time.perf_counter() - start
    memory_delta = memory_allocated(device) - memory_before
    row: dict[str, Any] = {
        "variant": name,
        "batch": batch,
        "first_call_s": seconds,
        "memory_delta_mb": memory_delta / 2**20,
        "max_abs_diff_vs_eager": (out.float() - reference).abs().max().item(),
        "argmax_match_vs_eager": (out.float().argmax(-1) == reference.argmax(-1)).float().mean().item(),
    }
    if name.startswith("ascend_graph_"):
        counts = counters()
        row["counters_delta"] = {key: counts[key] - counts_before.get(key, 0) for key in counts}
    return row, (ids, pos)


def measure(
    row: dict[str, Any],
    step: Step,
    inputs: tuple[torch.Tensor, torch.Tensor],
    iters: int,
    device: torch.device,
    pieces: list[GraphCompiled],
) -> dict[str, Any]:
    """Step times, kernels per step and, for ascend_graph, capture figures, pass counts and the direct call."""
    counts_before = counters()
    times = time_steps(step, inputs, iters, device)
    if "counters_delta" in row:  # first call + warm-up + timed steps: every one must replay
        counts = counters()
        for key in counts:
            row["counters_delta"][key] = row["counters_delta"].get(key, 0) + counts[key] - counts_before.get(key, 0)
    row.update(
        median_ms=statistics.median(times) * 1e3,
        p10_ms=sorted(times)[len(times) // 10] * 1e3,
        p90_ms=sorted(times)[(len(times) * 9) // 10] * 1e3,
        step_times_ms=[t * 1e3 for t in times],
        kernels_per_step=count_kernels(step, inputs, device),
    )
    if row["variant"].startswith("ascend_graph_"):
        captures = [c for p in pieces for c in p.captures.values()]
        row["ascend_graph_capture_s_all_sizes"] = sum(c.capture_seconds for c in captures)
        row["ascend_graph_graph_mb_all_sizes"] = sum(c.graph_bytes for c in captures) / 2**20
        reports = [p.pass_report for p in pieces if p.pass_report is not None]
        if reports:
            row["passes"] = {
                "graph_ops_before": sum(r.ops_before for r in reports),
                "graph_ops_after": sum(r.ops_after for r in reports),
                "replaced": {k: sum(r.replaced[k] for r in reports) for k in reports[0].replaced},
            }
        direct = direct_call(row["batch"], *inputs, pieces)
        if direct is not None:
            row["direct_median_ms"] = statistics.median(time_steps(direct, inputs, iters, device)) * 1e3
    return row


# Every GraphCompiled the backend builds during one variant, to read capture time and graph memory afterwards.
LIVE_PIECES: list[GraphCompiled] = []


def tracked_backend(gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> GraphCompiled:
    """ascend_graph's dynamo backend, keeping every GraphCompiled it builds in LIVE_PIECES."""
    piece = ascend_graph_backend(gm, example_inputs, **kwargs)
    LIVE_PIECES.append(piece)
    return piece


def print_table(result: dict[str, Any]) -> None:
    for shape in result["shapes"]:
        print(
            f"\n{shape['name']}  floor per batch (ms): "
            + ", ".join(f"{b}: {f:.3f}" for b, f in shape["floor_ms"].items())
            if shape["floor_ms"]
            else f"\n{shape['name']}"
        )
        print(f"{'variant':24s} {'batch':>5s} {'median ms':>10s} {'kernels':>8s} {'first s':>8s} {'maxdiff':>9s}")
        for row in shape["rows"]:
            kernels = "-" if row["kernels_per_step"] is None else f"{row['kernels_per_step']:.0f}"
            print(
                f"{row['variant']:24s} {row['batch']:5d} {row['median_ms']:10.3f} {kernels:>8s} "
                f"{row['first_call_s']:8.1f} {row['max_abs_diff_vs_eager']:9.2e}"
            )


class Rendezvous:
    """Several benchmark processes on one device: each compiles its variants at the same time as the others (compiling
    is host work, and the slow part of this benchmark), then they take turns for everything timed, one process at a
    time under an exclusive file lock, after all have compiled. `--rendezvous DIR --rank i --world n`."""

    def __init__(self, directory: str, rank: int, world: int, timeout_s: float = 600.0) -> None:
        self.directory, self.rank, self.world, self.timeout_s = Path(directory), rank, world, timeout_s
        self.directory.mkdir(parents=True, exist_ok=True)

    def all_compiled(self) -> float:
        """Mark this rank compiled (or failed: it still counts) and wait for the others; returns seconds waited."""
        (self.directory / f"ready.{self.rank}").touch()
        start = time.monotonic()
        while len(list(self.directory.glob("ready.*"))) < self.world and time.monotonic() - start < self.timeout_s:
            time.sleep(0.5)
        return time.monotonic() - start

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        import fcntl

        with open(self.directory / "timing.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _print_row(shape_name: str, row: dict[str, Any]) -> None:
    if "median_ms" not in row:
        return
    print(
        f"{shape_name} {row['variant']:30s} b={row['batch']:4d} {row['median_ms']:9.3f} ms "
        f"direct={row.get('direct_median_ms', float('nan')):8.3f} "
        f"kernels={row['kernels_per_step']} first={row['first_call_s']:.1f}s "
        f"diff={row['max_abs_diff_vs_eager']:.2e} argmax={row['argmax_match_vs_eager']:.2f}",
        flush=True,
    )


def _failed(shape_name: str, variant: str, batch: int, error: Exception) -> dict[str, Any]:
    print(f"FAILED {shape_name} {variant} batch {batch}: {error!r}", flush=True)
    return {"variant": variant, "batch": batch, "error": repr(error)[:2000]}


def _release(device: torch.device) -> None:
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_sequential(
    entry: dict[str, Any], model: Qwen3Decoder, variants: list[str], batches: list[int], settings: dict[str, Any]
) -> None:
    """Each variant: compile, first call and timing per batch, then freed (the default mode)."""
    context, iters, device = settings["context"], settings["iters"], settings["device"]
    for variant in variants:
        LIVE_PIECES.clear()
        with torch.inference_mode():
            step = build_variant(variant, model, batches)
            for batch in batches:
                try:
                    row = run_batch(variant, step, model, batch, context, iters, device)
                except Exception as error:  # a failing variant is recorded, not hidden
                    row = _failed(entry["name"], variant, batch, error)
                entry["rows"].append(row)
                settings["progress"].update(f"{entry['name']} {variant} b={batch}")
                _print_row(entry["name"], row)
                settings["save"]()
        del step
        _release(device)


def run_rendezvous(
    entry: dict[str, Any], model: Qwen3Decoder, variants: list[str], batches: list[int], settings: dict[str, Any]
) -> None:
    """Compile every variant now (beside the other processes), then time them in this process's turn."""
    context, iters, device = settings["context"], settings["iters"], settings["device"]
    compiled = []
    with torch.inference_mode():
        for variant in variants:  # no dynamo reset in between: it would throw away the earlier variants' code
            LIVE_PIECES.clear()
            step = build_variant(variant, model, batches, reset=False)
            calls = []
            for batch in batches:
                try:
                    calls.append(first_call(variant, step, model, batch, context, device))
                except Exception as error:
                    entry["rows"].append(_failed(entry["name"], variant, batch, error))
            compiled.append((step, calls, list(LIVE_PIECES)))
    entry["waited_for_other_ranks_s"] = settings["rendezvous"].all_compiled()
    with settings["rendezvous"].turn(), torch.inference_mode():
        settings["measure_floor"](entry, model)
        step = pieces = None
        for step, calls, pieces in compiled:
            for row, inputs in calls:
                try:
                    row = measure(row, step, inputs, iters, device, pieces)
                except Exception as error:
                    row = _failed(entry["name"], row["variant"], row["batch"], error)
                entry["rows"].append(row)
                settings["progress"].update(f"{entry['name']} {variant} b={batch}")
                _print_row(entry["name"], row)
                settings["save"]()
        del step, pieces
        compiled.clear()
        _release(device)
        late = settings["late_variants"]
        if late and time.monotonic() - settings["start"] > settings["deadline_s"]:
            entry["skipped_late_variants"] = late
            print(f"skipped {late}: past the {settings['deadline_s']} s deadline", flush=True)
        elif late:
            run_sequential(entry, model, late, batches, settings)


def run_shape(
    result: dict[str, Any],
    shape_name: str,
    variants: list[str],
    batches: list[int],
    settings: dict[str, Any],
    dtype: torch.dtype,
) -> None:
    """Every variant at every batch size for one model shape, appended to `result["shapes"]`."""
    device = settings["device"]
    model = build_decoder(shape_name, max_batch=max(batches), max_seq=result["max_seq"], dtype=dtype, device=device)
    with torch.no_grad():
        model.kv_cache.normal_()  # never time on zeros
    entry: dict[str, Any] = {"name": shape_name, "parameters": sum(p.numel() for p in model.parameters()), "rows": []}
    result["shapes"].append(entry)
    if settings["rendezvous"] is not None:
        run_rendezvous(entry, model, variants, batches, settings)
    else:
        settings["measure_floor"](entry, model)
        run_sequential(entry, model, variants, batches, settings)
    del model
    _release(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", help=f"comma-separated, from {sorted(SHAPES)}")
    parser.add_argument("--batches", help="comma-separated batch sizes")
    parser.add_argument("--variants", help="comma-separated variants")
    parser.add_argument("--iters", type=int)
    parser.add_argument("--out", default=".out/bench_backend.json", help="JSON result path")
    parser.add_argument("--plot", help="PNG plot path (default: the JSON path with .png)")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--rendezvous", help="directory shared by processes that compile in parallel, time in turn")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--late-variants", default="", help="with --rendezvous: compiled and timed in the turn")
    parser.add_argument("--deadline-s", type=float, default=1e9, help="skip late variants after this many seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    preset = dict(PRESETS[args.preset])
    shapes = args.shapes.split(",") if args.shapes else preset["shapes"]
    batches = [int(b) for b in args.batches.split(",")] if args.batches else preset["batches"]
    variants = args.variants.split(",") if args.variants else preset["variants"]
    device = torch.device("cuda" if args.preset.startswith("cuda") else "cpu")
    dtype = getattr(torch, preset["dtype"])
    max_seq = preset["max_seq"]
    torch._dynamo.config.cache_size_limit = 64
    result: dict[str, Any] = {
        "benchmark": "decode step, static KV cache, random weights",
        "environment": environment(device),
        "preset": args.preset,
        "dtype": preset["dtype"],
        "max_seq": max_seq,
        "context": max_seq // 2,
        "iters": args.iters or preset["iters"],
        "rendezvous": {"rank": args.rank, "world": args.world} if args.rendezvous else None,
        "shapes": [],
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(shapes) * len(variants) * len(batches), "decode-step bench", not args.no_progress)

    def measure_floor(entry: dict[str, Any], model: Qwen3Decoder) -> None:
        if "copy_bandwidth_bytes_per_s" not in result:
            result["copy_bandwidth_bytes_per_s"] = copy_bandwidth(device)
        bandwidth = result["copy_bandwidth_bytes_per_s"]
        entry["floor_bytes"] = {b: floor_bytes(model, b, result["context"]) for b in batches}
        entry["floor_ms"] = {b: n / bandwidth * 1e3 for b, n in entry["floor_bytes"].items()} if bandwidth else {}

    settings = {
        "context": result["context"],
        "iters": result["iters"],
        "device": device,
        "save": lambda: out_path.write_text(json.dumps(result, indent=1)),
        "rendezvous": Rendezvous(args.rendezvous, args.rank, args.world) if args.rendezvous else None,
        "late_variants": [v for v in args.late_variants.split(",") if v],
        "deadline_s": args.deadline_s,
        "start": time.monotonic(),
        "measure_floor": measure_floor,
        "progress": progress,
    }
    for shape_name in shapes:
        run_shape(result, shape_name, variants, batches, settings, dtype)
    settings["save"]()
    progress.close()
    if not args.no_plot:
        result["plot"] = str(plot_decode_step(result, args.plot or out_path.with_suffix(".png")))
        settings["save"]()
        print(f"plot {result['plot']}")
    print_table({"shapes": [{**s, "rows": [r for r in s["rows"] if "median_ms" in r]} for s in result["shapes"]]})
    print(f"\nwrote {out_path}")
    return result


if __name__ == "__main__":
    main()
