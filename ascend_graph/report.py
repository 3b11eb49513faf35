"""What graph mode did, as plain data: `GraphCompiled.report()` for one graph, `ascend_graph.inspect()` for a model.

Both return JSON-ready dicts (the `ascend-graph inspect` command prints them): captured sizes, graph memory per
size, passes applied, sizes served eagerly and why, the verifier's results, and the counters.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .config import GraphConfig
from .counters import counters

if TYPE_CHECKING:
    from .backend import GraphCompiled

DEFAULT_INSPECT_SIZES = (1, 2, 4, 8)


def _passes(piece: GraphCompiled) -> list[str] | str:
    """The passes applied: what the graph records (`passes_applied`), else the config's `passes` field, else
    "none" (the passes feature may not be in this build)."""
    applied = getattr(piece, "passes_applied", None)
    if applied is None:
        applied = getattr(piece.config, "passes", None)
    if not applied:
        return "none"
    if isinstance(applied, str):
        return [applied]
    return [getattr(item, "__name__", str(item)) for item in applied]


def graph_report(piece: GraphCompiled) -> dict[str, Any]:
    """The report of one GraphCompiled (see `GraphCompiled.report`)."""
    captured = [
        {
            "size": capture.size,
            "capture_s": round(capture.capture_seconds, 6),
            "pool_bytes": capture.pool_bytes,
            "static_bytes": capture.static_bytes,
            "graph_bytes": capture.graph_bytes,
        }
        for capture in sorted(piece.captures.values(), key=lambda c: -1 if c.size is None else c.size)
    ]
    kinds = Counter(spec.kind.value for spec in piece.signature.inputs)
    return {
        "device": piece.device.kind,
        "lowering": piece.lowering,
        "output_mode": piece.config.output_mode,
        "capture_sizes": list(piece.config.capture_sizes),
        "sizes": list(piece.sizes),  # the capture sizes dynamo's guards allow for this graph
        "batch_dimension": piece.signature.batch_where,  # the bucketed symbol and where it is, or why none
        "pinned": {str(symbol): value for symbol, value in piece.signature.pinned.items()},
        "graph_fallback": piece.fallback_reason,  # why the whole graph runs eagerly, or None
        "captured": captured,
        "memory_bytes": {
            "pool": sum(row["pool_bytes"] for row in captured),
            "static": sum(row["static_bytes"] for row in captured),
        },
        "fallbacks": [fallback.as_dict() for _, fallback in sorted(piece.size_fallbacks.items(), key=_size_key)],
        "verify": {
            "enabled": piece.config.verify,
            "results": [result.as_dict() for result in piece.verify_results],
        },
        "passes": _passes(piece),
        "inputs": dict(sorted(kinds.items())),
    }


def _size_key(item: tuple[int | None, Any]) -> int:
    return -1 if item[0] is None else item[0]


def inspect(
    model: Callable[..., Any] | None = None,
    args: Sequence[Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Compile `model` with the ascend_graph backend, call it once on `args` (capture happens there) and report.

    Without a model: the built-in tiny Qwen3-style decoder (static KV cache) at batch 3, capture sizes
    (1, 2, 4, 8) unless `options` says otherwise. `options` are GraphConfig options (e.g. verify=True)."""
    from .backend import ascend_graph_backend

    name = type(model).__name__ if model is not None else "tiny-qwen3-decoder"
    if model is None:
        model, args, options = _tiny_decoder(options)
    if args is None:
        raise ValueError("ascend_graph.inspect: pass args=(...) for your model (only the default model has its own)")
    config = GraphConfig.from_options(options)
    pieces: list[GraphCompiled] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> GraphCompiled:
        piece = ascend_graph_backend(gm, example_inputs, options=options)
        pieces.append(piece)
        return piece

    before = counters()
    compiled = torch.compile(model, backend=backend, dynamic=True)
    with torch.inference_mode():
        compiled(*args)
    after = counters()
    return {
        "model": name,
        "config": {key: _plain(value) for key, value in dataclasses.asdict(config).items()},
        "graphs": [piece.report() for piece in pieces],
        "counters": {key: after[key] - before.get(key, 0) for key in after},
    }


def _tiny_decoder(options: dict[str, Any]) -> tuple[Any, tuple[torch.Tensor, ...], dict[str, Any]]:
    from .models.qwen3 import build_decoder

    options = dict(options)
    options.setdefault("capture_sizes", list(DEFAULT_INSPECT_SIZES))
    sizes = list(options["capture_sizes"])
    device = options.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_decoder("tiny", max_batch=max(sizes), max_seq=64, device=device)
    options.setdefault("pad_values", model.pad_values)
    batch = 3 if max(sizes) >= 3 else max(sizes)
    generator = torch.Generator().manual_seed(0)
    token_ids = torch.randint(0, model.shape.vocab, (batch,), generator=generator).to(device)
    positions = torch.zeros(batch, dtype=torch.long, device=device)
    return model, (token_ids, positions), options


def format_inspection(result: dict[str, Any]) -> str:
    """The text `ascend-graph inspect` prints."""
    lines = [f"model: {result['model']}"]
    for number, graph in enumerate(result["graphs"]):
        passes = graph["passes"] if isinstance(graph["passes"], str) else ", ".join(graph["passes"])
        lines.append(
            f"graph {number}: device {graph['device']}, lowering {graph['lowering']}, passes applied: {passes}, "
            f"sizes {graph['sizes']} (of capture_sizes {graph['capture_sizes']})"
        )
        pinned = ", ".join(f"{symbol}={value}" for symbol, value in graph["pinned"].items()) or "none"
        lines.append(f"  bucketed: {graph['batch_dimension']}; pinned: {pinned}")
        outside = [size for size in graph["capture_sizes"] if size not in graph["sizes"]]
        if outside and graph["sizes"]:
            lines.append(f"  capture sizes outside the range dynamo allows for this graph: {outside}")
        if graph["graph_fallback"]:
            lines.append(f"  whole graph runs eagerly: {graph['graph_fallback']}")
        verdicts = {row["size"]: row for row in graph["verify"]["results"]}
        lines.append(f"  {'size':>6} {'capture s':>10} {'pool MiB':>9} {'static KiB':>11}  verify")
        for row in graph["captured"]:
            verdict = verdicts.get(row["size"])
            verify = "off" if verdict is None else f"ok, max abs error {verdict['max_abs_error']:.3g}"
            lines.append(
                f"  {str(row['size']):>6} {row['capture_s']:10.4f} {row['pool_bytes'] / 2**20:9.2f} "
                f"{row['static_bytes'] / 2**10:11.1f}  {verify}"
            )
        for fallback in graph["fallbacks"]:
            lines.append(f"  size {fallback['size']} runs eagerly ({fallback['cause']}): {fallback['reason']}")
            lines.append(f"    advice: {fallback['advice']}")
        if not graph["fallbacks"] and not graph["graph_fallback"]:
            lines.append("  fallbacks: none")
    counts = ", ".join(f"{key} {value}" for key, value in result["counters"].items())
    lines.append(f"counters (this call): {counts}")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
