"""`ascend_graph.inspect()`: compile a model with the ascend_graph backend, call it once, and report every graph.

Returns a JSON-ready dict (the `ascend-graph inspect` command prints it, cli.py): the configuration, each graph's
`GraphCompiled.report()` (report.py) and the counters this call moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .backend import GraphCompiled, ascend_graph_backend
from .config import GraphConfig
from .counters import counters

DEFAULT_INSPECT_SIZES = (1, 2, 4, 8)


def inspect(
    model: Callable[..., Any] | None = None,
    args: Sequence[Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Compile `model` with the ascend_graph backend, call it once on `args` (capture happens there) and report.

    Without a model: the built-in tiny Qwen3-style decoder (static KV cache) at batch 3, capture sizes
    (1, 2, 4, 8) unless `options` says otherwise. `options` are GraphConfig options (e.g. verify=True)."""
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


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
