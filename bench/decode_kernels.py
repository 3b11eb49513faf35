"""Decode-kernel microbenchmark: the Triton decode GEMVs of kernels/decode_triton.py against cuBLAS
(`torch.nn.functional.linear`) and the unfused ops they replace, per layer site of Qwen3-0.6B and Qwen3-8B and per
token count, so that a compiler pass can choose the Triton kernel only for the (site, tokens) where it wins.

Variants per site (all bfloat16):
- `cublas`: F.linear alone, the GEMV the site has today.
- `unfused`: what the site runs today in full: add+RMSNorm (ascend_graph::add_rms_norm, vLLM's form) + F.linear
  for qkv; the same + silu_and_mul for gate_up; F.linear + the residual add for o_proj and down (lm_head: none).
- `triton`: the Triton GEMV alone (ascend_graph::decode_linear without residual).
- `triton_fused`: the site's fused op as it runs now: rms_norm_linear for qkv (streamed norm), rms_norm_linear
  (streamed norm, silu_mul) for gate_up, decode_linear(residual) for o_proj and down (lm_head: none); block sizes
  from kernels/decode_tuning.py for the site's shape at this token count.
- `triton_fused_exact` (qkv, gate_up): the same configuration with the exact-rounding norm (two passes over x).
- `triton_fused_sq2d`, `triton_fused_stages4`, `triton_fused_k256`, `triton_fused_k256w4` (qkv, gate_up): the
  streamed norm in the configurations of kernels/decode_tuning.py's NORM_VARIANTS (issue 26: why the norm prologue
  doubles the GEMV's time), each where it applies at the token count (the 256-wide ones at one token only).
- `triton_fused_f534d05`: the fused kernel as f534d05 ran it (exact-rounding norm, its block sizes), the
  "fused" column of docs/results.md; for o_proj and down only where the configuration changed since.
- `cublas_silu`, `triton_silu` (gate_up): F.linear + silu_and_mul against decode_gate_up_silu, no norm: the
  SiLU-mul epilogue's own cost.
- `qkv_rope_stock`, `qkv_rope_single`, `qkv_rope_split` (qkv): the whole attention front, (residual add +) input
  RMSNorm, qkv GEMV, per-head q / k RMSNorm and neox RoPE: stock's sequence as separate ops (add_rms_norm, F.linear,
  torch's F.rms_norm on the q and on the k heads, the rotation in torch ops: standing in for vLLM's CUDA rms_norm
  and rotary kernels, so more kernels than vLLM launches), against ascend_graph's one-kernel rms_norm_qkv_rope
  (kernels/decode_qkv_rope_triton.py, one program per head) and its split-K variant
  (kernels/decode_qkv_rope_split.py, heads x splits programs); streamed norm, float32 residual sum.

Timing: each variant is captured in one CUDA graph that calls it once per weight copy, rotating over enough copies
(>= 256 MB in all) that the weights cannot stay in the 50 MB L2 between calls, as in a model's step; the graph is
replayed `--reps` times per trial, the median trial over `--trials` gives the time per call, which includes the
graph's per-node cost (about a microsecond each), as it does in a model. Effective weight bandwidth = bytes of the
weight / time per call. The copy bandwidth of the same device is recorded beside it.

    python -m bench.decode_kernels --tokens 1 8 32 --out $OUT/decode_kernels.json   # about a minute on an H100
    python -m bench.decode_kernels --tokens 1 8 32 --kinds qkv gate_up --autotune --out $OUT/tune.json

With --autotune the main variant of each site (`triton_fused`, or `triton` for the lm_head) first tries the few
configurations of `autotune_candidates` at each token count and runs with the fastest; every candidate's time is
in the JSON (`autotune`, with the `tuned_key` to copy it under into kernels/decode_tuning.py's TUNED table).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from ascend_graph.kernels import decode_qkv_rope_split, decode_qkv_rope_triton, decode_triton
from ascend_graph.kernels.decode_tuning import (
    NORM_VARIANTS,
    DecodeConfig,
    GemvShape,
    autotune_candidates,
    config_for,
    default_config,
    norm_variant_config,
)

from bench.common import environment
from bench.decode_step import copy_bandwidth

# (hidden, q size, qkv out, intermediate) of each model; the lm_head's vocabulary.
MODELS = {"qwen3-0.6b": (1024, 2048, 4096, 3072), "qwen3-8b": (4096, 4096, 6144, 12288)}
VOCAB = 151936
TOKENS = [1, 2, 4, 8, 16, 32]
KINDS = ("qkv", "o_proj", "gate_up", "down", "lm_head")
ROTATION_BYTES = 256 << 20  # weight bytes each graph rotates over: five times the H100's 50 MB L2
EPS = 1e-6
DEVICE = "cuda"  # the CPU lane's test of this module swaps in "cpu" (Triton's interpreter)
QKV_HEADS = {"qwen3-0.6b": (16, 8), "qwen3-8b": (32, 8)}  # (q heads, kv heads) of the qkv site's attention
HEAD_DIM = 128


@dataclass(frozen=True)
class Site:
    """One linear layer site: its weight is [rows, k]; `kind` says what is fused around it."""

    model: str
    kind: str  # one of KINDS
    rows: int
    k: int

    @property
    def out(self) -> int:
        return self.rows // 2 if self.kind == "gate_up" else self.rows


def sites(models: list[str]) -> list[Site]:
    found = []
    for model in models:
        hidden, q_size, qkv, inter = MODELS[model]
        found += [
            Site(model, "qkv", qkv, hidden),
            Site(model, "o_proj", hidden, q_size),
            Site(model, "gate_up", 2 * inter, hidden),
            Site(model, "down", hidden, inter),
            Site(model, "lm_head", VOCAB, hidden),
        ]
    return found


@dataclass
class Inputs:
    """Everything one site's variants read at one token count; `weights` are the rotated copies."""

    x: torch.Tensor
    residual_in: torch.Tensor
    residual_out: torch.Tensor
    norm_weight: torch.Tensor
    weights: list[torch.Tensor]


def make_weights(site: Site) -> list[torch.Tensor]:
    nbytes = site.rows * site.k * 2
    copies = max(1, math.ceil(ROTATION_BYTES / nbytes))
    return [torch.randn(site.rows, site.k, device=DEVICE, dtype=torch.bfloat16) * site.k**-0.5 for _ in range(copies)]


def make_inputs(site: Site, tokens: int, weights: list[torch.Tensor]) -> Inputs:
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=DEVICE, dtype=torch.bfloat16)

    norm_weight = 1 + 0.1 * randn(site.k)
    return Inputs(randn(tokens, site.k), randn(tokens, site.k), randn(tokens, site.out), norm_weight, weights)


Call = Callable[[torch.Tensor], Any]  # one call of a variant on one weight copy


@dataclass(frozen=True)
class Variant:
    """One variant of a site: its call and the Triton configuration it launches with (None: not Triton)."""

    call: Call
    config: DecodeConfig | None = None


def fused_shape(site: Site, tokens: int) -> GemvShape:
    """The shape the site's fused Triton variant launches (the block sizes depend on it)."""
    norm = site.kind in ("qkv", "gate_up")  # the prologue adds the residual: two [tokens, K] inputs
    silu = site.kind == "gate_up"
    return GemvShape(site.out, site.k, tokens, 2 if silu else 1, 2 if norm else 1, norm=norm)


def f534d05_config(site: Site) -> DecodeConfig:
    """The configuration f534d05 ran (docs/results.md): its rule looked at (outputs, K) alone."""
    return default_config(GemvShape(site.out, site.k))


def _norm_variants(site: Site, inputs: Inputs, config: DecodeConfig) -> dict[str, Variant]:
    """qkv and gate_up: the unfused sequence and the fused kernel's three forms (see the module docstring)."""
    ops = torch.ops.ascend_graph
    x, res_in, nw, silu = inputs.x, inputs.residual_in, inputs.norm_weight, site.kind == "gate_up"

    def unfused(w: torch.Tensor) -> Any:
        normed, _ = ops.add_rms_norm(x, res_in, nw, EPS, True)
        out = F.linear(normed, w)
        return ops.silu_and_mul(out[:, : site.out], out[:, site.out :]) if silu else out

    def fused(exact: bool, chosen: DecodeConfig) -> Variant:
        return Variant(lambda w: decode_triton.launch(
            x, w, residual=res_in, norm_weight=nw, eps=EPS, fp32_sum=True, silu_mul=silu, exact_rounding=exact,
            config=chosen,
        ), chosen)  # fmt: skip

    variants = {
        "unfused": Variant(unfused),
        "triton_fused": fused(False, config),
        "triton_fused_exact": fused(True, config),
        "triton_fused_f534d05": fused(True, f534d05_config(site)),
    }
    for name in NORM_VARIANTS:
        variant_config = norm_variant_config(fused_shape(site, x.shape[0]), name)
        if variant_config is not None:
            variants[f"triton_fused_{name}"] = fused(False, variant_config)
    if silu:  # SiLU-mul alone, without the norm: decode_gate_up_silu against cuBLAS + silu_and_mul
        silu_config = config_for(GemvShape(site.out, site.k, x.shape[0], 2))
        variants["cublas_silu"] = Variant(lambda w: ops.silu_and_mul(*F.linear(x, w).chunk(2, dim=-1)))
        variants["triton_silu"] = Variant(
            lambda w: decode_triton.launch(x, w, silu_mul=True, config=silu_config), silu_config
        )
    return variants


def qkv_rope_variants(site: Site, inputs: Inputs, heads: tuple[int, int, int] | None = None) -> dict[str, Variant]:
    """The qkv site's whole attention front three ways (see the module docstring); `heads` (q heads, kv heads,
    head dim): the model's unless given; none where they do not make up the site's rows."""
    q_heads, kv_heads, head_dim = heads or (*QKV_HEADS.get(site.model, (0, 0)), HEAD_DIM)
    if site.kind != "qkv" or q_heads < 1 or (q_heads + 2 * kv_heads) * head_dim != site.rows:
        return {}
    x, res_in, nw, tokens = inputs.x, inputs.residual_in, inputs.norm_weight, inputs.x.shape[0]
    q_norm, k_norm = (1 + 0.1 * torch.randn(2, head_dim, device=DEVICE)).to(torch.bfloat16)
    angles = torch.rand(tokens, head_dim // 2, device=DEVICE) * 2 * math.pi
    cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
    ops = torch.ops.ascend_graph

    def rope(heads: torch.Tensor) -> torch.Tensor:
        first, second = heads.chunk(2, dim=-1)
        c, s = cos[:, None], sin[:, None]
        return torch.cat((first * c - second * s, second * c + first * s), dim=-1)

    def stock(w: torch.Tensor) -> torch.Tensor:
        normed, _ = ops.add_rms_norm(x, res_in, nw, EPS, True)
        q, k, v = F.linear(normed, w).split([q_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
        q = rope(F.rms_norm(q.view(tokens, q_heads, head_dim), (head_dim,), q_norm, EPS))
        k = rope(F.rms_norm(k.view(tokens, kv_heads, head_dim), (head_dim,), k_norm, EPS))
        return torch.cat((q.flatten(1), k.flatten(1), v), dim=-1)

    args = (x, res_in, nw, EPS)
    rest = (q_norm, k_norm, EPS, cos, sin, q_heads, kv_heads, True, False)
    config = decode_qkv_rope_triton.qkv_rope_config(x, inputs.weights[0], head_dim // 2, True)
    return {
        "qkv_rope_stock": Variant(stock),
        "qkv_rope_single": Variant(lambda w: decode_qkv_rope_triton.launch(*args, w, *rest, config=config), config),
        "qkv_rope_split": Variant(lambda w: decode_qkv_rope_split.launch_split(*args, w, *rest, config=config), config),
    }


def variant_calls(site: Site, inputs: Inputs, tuned: DecodeConfig | None = None) -> dict[str, Variant]:
    """The variants of a site; `tuned` replaces the default configuration of the site's main Triton variant
    (`main_variant`)."""
    x, res_out = inputs.x, inputs.residual_out
    tokens = x.shape[0]
    plain = tuned if tuned and site.kind == "lm_head" else config_for(GemvShape(site.rows, site.k, tokens))
    variants = {
        "cublas": Variant(lambda w: F.linear(x, w)),
        "triton": Variant(lambda w: decode_triton.launch(x, w, config=plain), plain),
    }
    config = tuned or config_for(fused_shape(site, tokens))
    if site.kind in ("qkv", "gate_up"):
        variants.update(_norm_variants(site, inputs, config))
        variants.update(qkv_rope_variants(site, inputs))
    elif site.kind in ("o_proj", "down"):
        variants["unfused"] = Variant(lambda w: F.linear(x, w) + res_out)
        variants["triton_fused"] = Variant(lambda w: decode_triton.launch(x, w, add=res_out, config=config), config)
        old = f534d05_config(site)
        if config != old:
            variants["triton_fused_f534d05"] = Variant(
                lambda w: decode_triton.launch(x, w, add=res_out, config=old), old
            )
    return variants


def main_variant(site: Site) -> str:
    """The variant that serves the site in a fused model, the one --autotune tunes."""
    return "triton" if site.kind == "lm_head" else "triton_fused"


def time_per_call(call: Call, weights: list[torch.Tensor], reps: int, trials: int) -> float:
    """Seconds per call: a CUDA graph calls it once per weight copy; median over trials of `reps` replays."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for weight in weights[:2]:  # compile and warm up outside the capture
            call(weight)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for weight in weights:
            call(weight)
    for _ in range(3):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(trials):
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / (reps * len(weights)))
    del graph
    return statistics.median(times)


def autotune(site: Site, tokens: int, weights: list[torch.Tensor], reps: int, trials: int) -> dict[str, Any]:
    """Time each candidate config of the site's main variant at one token count; the fastest is `best`. A candidate
    that does not compile or launch here (too much shared memory for its stages) is recorded as such."""
    variant = main_variant(site)
    shape = GemvShape(site.rows, site.k, tokens) if site.kind == "lm_head" else fused_shape(site, tokens)
    inputs = make_inputs(site, tokens, weights)
    tried: list[dict[str, Any]] = []
    for config in autotune_candidates(shape):
        entry: dict[str, Any] = {"config": asdict(config)}
        try:
            call = variant_calls(site, inputs, config)[variant].call
            entry["us"] = time_per_call(call, weights, reps, trials) * 1e6
        except Exception as error:  # noqa: BLE001  (Triton's OutOfResources and compile errors have no common base)
            entry["error"] = f"{type(error).__name__}: {str(error)[:200]}"
            torch.cuda.synchronize()
        tried.append(entry)
    timed = [entry for entry in tried if "error" not in entry]
    best = min(timed, key=lambda entry: entry["us"])["config"] if timed else None
    return {
        "site": asdict(site), "tokens": tokens, "variant": variant, "tuned_key": asdict(shape.bucket()),
        "candidates": tried, "best": best,
    }  # fmt: skip


def measure_site(
    site: Site, weights: list[torch.Tensor], args: argparse.Namespace, tuned: dict[int, DecodeConfig]
) -> list[dict[str, Any]]:
    """Every variant of the site at every token count (`tuned`: the main variant's config per token count)."""
    weight_bytes = weights[0].numel() * weights[0].element_size()
    rows = []
    for tokens in args.tokens:
        inputs = make_inputs(site, tokens, weights)
        for name, variant in variant_calls(site, inputs, tuned.get(tokens)).items():
            seconds = time_per_call(variant.call, weights, args.reps, args.trials)
            rows.append({
                **asdict(site), "tokens": tokens, "variant": name, "us": seconds * 1e6,
                "weight_bytes": weight_bytes, "weight_bytes_per_s": weight_bytes / seconds, "copies": len(weights),
                "config": asdict(variant.config) if variant.config else None,
            })  # fmt: skip
    return rows


def winners(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, site, tokens): the fastest variant, the fused kernel's speed-up over today's sequence, and
    f534d05's fused kernel's (the same where nothing changed for the site)."""
    table: dict[tuple[str, str, int], dict[str, float]] = {}
    for row in rows:
        if row["variant"].startswith("qkv_rope"):  # more than the site's GEMV: in `qkv_rope_summary`
            continue
        table.setdefault((row["model"], row["kind"], row["tokens"]), {})[row["variant"]] = row["us"]
    summary = []
    for (model, kind, tokens), times in sorted(table.items()):
        today = times.get("unfused", times["cublas"])
        fused = times.get("triton_fused", times["triton"])
        old = times.get("triton_fused_f534d05", fused)
        summary.append({
            "model": model, "kind": kind, "tokens": tokens, "fastest": min(times, key=times.__getitem__),
            "today_us": today, "fused_us": fused, "speedup": today / fused,
            "f534d05_us": old, "f534d05_speedup": today / old,
        })  # fmt: skip
    return summary


def qkv_rope_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, tokens): the attention front's three forms, microseconds, and each kernel's speed-up over stock."""
    table: dict[tuple[str, int], dict[str, float]] = {}
    for row in rows:
        if row["variant"].startswith("qkv_rope"):
            table.setdefault((row["model"], row["tokens"]), {})[row["variant"].removeprefix("qkv_rope_")] = row["us"]
    return [
        {"model": model, "tokens": tokens, **{f"{name}_us": us for name, us in times.items()},
         "single_speedup": times["stock"] / times["single"], "split_speedup": times["stock"] / times["split"]}
        for (model, tokens), times in sorted(table.items())
    ]  # fmt: skip


def print_summary(summary: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    bandwidth = {(r["model"], r["kind"], r["tokens"], r["variant"]): r["weight_bytes_per_s"] for r in rows}
    print(f"{'model':<11} {'site':<8} {'M':>3} {'today us':>9} {'fused us':>9} {'x':>5} {'old x':>5}  "
          f"cublas/triton TB/s  fastest")  # fmt: skip
    for s in summary:
        key = (s["model"], s["kind"], s["tokens"])
        rates = f"{bandwidth[(*key, 'cublas')] / 1e12:5.2f}/{bandwidth[(*key, 'triton')] / 1e12:5.2f}"
        print(f"{s['model']:<11} {s['kind']:<8} {s['tokens']:>3} {s['today_us']:9.2f} {s['fused_us']:9.2f} "
              f"{s['speedup']:5.2f} {s['f534d05_speedup']:5.2f}  {rates:>18}  {s['fastest']}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--tokens", nargs="+", type=int, default=TOKENS)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="layer sites to measure")
    parser.add_argument("--autotune", action="store_true")
    parser.add_argument("--out", default=".out/decode_kernels.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU: this benchmark times CUDA kernels")
    if max(args.tokens) > decode_triton.MAX_TOKENS:
        parser.error(f"--tokens at most {decode_triton.MAX_TOKENS}, the most the Triton kernel takes")
    began = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "decode GEMV kernels: Triton (fused) vs cuBLAS + unfused ops, CUDA graphs, rotated weights",
        "environment": environment(torch.device("cuda")),
        "args": vars(args),
        "rotation_bytes": ROTATION_BYTES,
        "copy_bandwidth_bytes_per_s": copy_bandwidth(torch.device("cuda")),
        "autotune": [],
        "rows": [],
    }
    for site in sites(args.models):
        if site.kind not in args.kinds:
            continue
        weights = make_weights(site)
        tuned: dict[int, DecodeConfig] = {}
        for tokens in args.tokens if args.autotune else []:
            found = autotune(site, tokens, weights, args.reps, args.trials)
            result["autotune"].append(found)
            if found["best"]:
                tuned[tokens] = DecodeConfig(**found["best"])
        result["rows"] += measure_site(site, weights, args, tuned)
        del weights
        torch.cuda.empty_cache()
        print(f"{site.model} {site.kind}: done at {time.perf_counter() - began:.0f} s", flush=True)
    result["summary"] = winners(result["rows"])
    result["seconds"] = time.perf_counter() - began
    print_summary(result["summary"], result["rows"])
    result["qkv_rope_summary"] = qkv_rope_summary(result["rows"])
    for row in result["qkv_rope_summary"]:
        print(
            f"qkv_rope {row['model']:<11} {row['tokens']:>3}  stock {row['stock_us']:7.2f}  single "
            f"{row['single_us']:7.2f}  split {row['split_us']:7.2f} us"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
