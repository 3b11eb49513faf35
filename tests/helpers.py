"""Helpers to reach the backend's pieces from tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ascend_graph.backend import GraphCompiled, ascend_graph_backend


def compile_recording(
    model: Callable[..., Any], dynamic: bool | None = True, **options: Any
) -> tuple[Callable[..., Any], list[GraphCompiled]]:
    """torch.compile with the ascend_graph backend, keeping each GraphCompiled so tests can poison outputs."""
    pieces: list[GraphCompiled] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> GraphCompiled:
        compiled = ascend_graph_backend(gm, example_inputs, options=options)
        pieces.append(compiled)
        return compiled

    return torch.compile(model, backend=backend, dynamic=dynamic), pieces


def check_batches(
    model: Callable[..., Any], compiled: Callable[..., Any], batches: Any, atol: float, rtol: float
) -> None:
    """Fresh random (n, 32) inputs for each batch size n: the compiled model's output equals the eager one's."""
    for n in batches:
        x = torch.randn(n, 32)
        torch.testing.assert_close(compiled(x), model(x), atol=atol, rtol=rtol)


def poison_outputs(pieces: list[GraphCompiled]) -> None:
    """Fill every captured graph's static outputs with NaN (ints with a sentinel): a replay must overwrite them."""
    for piece in pieces:
        piece.device.synchronize()
        for capture in piece.captures.values():
            for output in capture.outputs:
                if isinstance(output, torch.Tensor):
                    output.fill_(float("nan") if output.is_floating_point() else -12345)


def direct_args(piece: GraphCompiled, **dynamic: torch.Tensor) -> list[Any]:
    """Arguments for calling a GraphCompiled directly (bypassing dynamo's guards): the named dynamic tensors,
    SymInts evaluated from their sizes, and the captured weights/buffers for everything else."""
    from ascend_graph.signature import InputKind

    values: dict[Any, int] = {}
    for spec in piece.signature.inputs:
        if spec.name in dynamic:
            for expr, size in zip(spec.shape, dynamic[spec.name].shape, strict=False):
                if expr.is_Symbol:
                    values[expr] = size
    captured = piece.captures[max(piece.captures, key=lambda s: s or 0)].args
    args: list[Any] = []
    for spec in piece.signature.inputs:
        if spec.name in dynamic:
            args.append(dynamic[spec.name])
        elif spec.kind is InputKind.SYMINT:
            args.append(int(spec.shape[0].subs(values)))
        else:
            args.append(captured[spec.index])
    return args
