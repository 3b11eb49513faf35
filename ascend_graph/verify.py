"""The shadow-eager verifier (`GraphConfig(verify=True)` or `ASCEND_GRAPH_VERIFY=1`).

Right after capture, before the first real replay, every captured size is run twice on the same random inputs:
once by the FX graph's own ops in eager mode (the reference: not the lowered callable, so a bad lowering is caught
too) and once by replaying the captured graph. Outputs, inputs the graph writes, and tensors it writes by
reference (KV caches) must agree within the dtype's tolerance; a size that does not is reported (size, where,
max abs error, tolerance) and runs eagerly from then on.

Random inputs that the graph can take:
- floating inputs: normal noise with the mean and standard deviation of the example input (the real first call);
- integer and bool inputs (token ids, positions, slots, block tables): rows of the example input, chosen at
  random, the same row choice for every input indexed by the batch dimension, so each row stays a consistent,
  in-range request (a row drawn twice writes the same values twice: no write order to depend on). Inputs not
  indexed by the batch dimension draw elements of the example at random;
- fixed-size copied inputs, weights, caches and host values: as captured.

State is not corrupted: tensors the graph writes by reference are copied to host memory before verification and
restored after each run (the eager run, the replay) and at the end, even when verification raises.

Tolerances (|graph - eager| <= atol + rtol * |eager|, NaN equal to NaN; integers and bools exact), chosen for a
compiled lowering against eager ATen ops; replaying the aten lowering is usually bit-exact:

    float64 1e-7 / 1e-6, float32 1e-4 / 1e-3, float16 1e-2 / 1e-2, bfloat16 5e-2 / 5e-2   (atol / rtol)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .capture import Capture
from .device import GraphDevice
from .signature import GraphSignature, InputKind

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-6),
    torch.float32: (1e-4, 1e-3),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}
TRIALS = 2  # random input sets per size


@dataclass(frozen=True)
class VerifyResult:
    size: int | None
    ok: bool
    max_abs_error: float  # the largest over every compared tensor and trial (0.0 for exact agreement)
    where: str  # the tensor with the worst violation (or the largest error when ok)
    atol: float
    rtol: float
    mismatched: int = 0  # elements outside the tolerance in `where`

    def message(self) -> str:
        verdict = "agrees with eager" if self.ok else f"{self.mismatched} elements outside the tolerance"
        return (
            f"size {self.size}: {self.where} max abs error {self.max_abs_error:.3g}, tolerance atol={self.atol:g} "
            f"rtol={self.rtol:g}: {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "ok": self.ok,
            "max_abs_error": self.max_abs_error,
            "where": self.where,
            "atol": self.atol,
            "rtol": self.rtol,
            "mismatched": self.mismatched,
        }


def tolerance(dtype: torch.dtype, overrides: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """(atol, rtol) for `dtype`: the user's override by dtype name, else the default; integers are exact."""
    name = str(dtype).removeprefix("torch.")
    if name in overrides:
        return overrides[name]
    return DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))


def random_inputs(
    signature: GraphSignature,
    example_inputs: Sequence[Any],
    capture: Capture,
    generator: torch.Generator,
) -> list[Any]:
    """Arguments for one verification run at `capture.size` (see the module docstring)."""
    args = list(capture.args)
    example_rows = signature.runtime_size(example_inputs)
    rows = None
    if example_rows is not None and capture.size is not None:
        rows = torch.randint(0, example_rows, (capture.size,), generator=generator)
    for index, buffer in capture.buffers.items():
        spec, example = signature.inputs[index], example_inputs[index]
        if spec.kind is InputKind.COPIED:
            args[index] = example.detach().clone()
        elif example.is_floating_point() or example.is_complex():
            args[index] = _noise_like(example, tuple(buffer.shape), generator)
        else:
            args[index] = _rows_of(example, tuple(buffer.shape), rows, generator)
    return args


def _noise_like(example: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    finite = example.detach().float()
    finite = finite[torch.isfinite(finite)] if finite.numel() else finite
    mean, std = (finite.mean().item(), finite.std().item()) if finite.numel() > 1 else (0.0, 1.0)
    std = std if std > 0 else 1.0
    noise = torch.randn(shape, generator=generator) * std + mean
    return noise.to(device=example.device, dtype=example.dtype)


def _rows_of(
    example: torch.Tensor, shape: tuple[int, ...], rows: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    if example.numel() == 0:
        return torch.zeros(shape, dtype=example.dtype, device=example.device)
    if rows is not None and example.dim() > 0 and int(rows.max()) < example.shape[0]:
        picked = example.detach()[rows.to(example.device)]
        if tuple(picked.shape) == shape:
            return picked.contiguous()
    flat = example.detach().reshape(-1)
    positions = torch.randint(0, flat.numel(), shape, generator=generator)
    return flat[positions.to(example.device)]


def _written_by_reference(signature: GraphSignature, capture: Capture) -> list[tuple[str, torch.Tensor]]:
    return [
        (f"input {spec.index} ({spec.name})", capture.args[spec.index])
        for spec in signature.inputs
        if spec.mutated and spec.index not in capture.buffers and isinstance(capture.args[spec.index], torch.Tensor)
    ]


def _restore(state: list[tuple[str, torch.Tensor]], saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for (_, tensor), copy in zip(state, saved, strict=True):
            tensor.copy_(copy)


def _compare(
    where: str, got: Any, expected: Any, overrides: dict[str, tuple[float, float]], size: int | None
) -> VerifyResult:
    if not isinstance(expected, torch.Tensor):
        return VerifyResult(size, True, 0.0, where, 0.0, 0.0)
    atol, rtol = tolerance(expected.dtype, overrides)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return VerifyResult(size, False, float("inf"), f"{where} shape {shape} vs {tuple(expected.shape)}", atol, rtol)
    got, expected = got.detach().cpu(), expected.detach().cpu()
    if not (expected.is_floating_point() or expected.is_complex()):
        bad = got != expected
        error = (got.long() - expected.long()).abs().max().item() if bad.any() else 0
        return VerifyResult(size, not bad.any().item(), float(error), where, 0.0, 0.0, int(bad.sum()))
    close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    difference = (got.double() - expected.double()).abs()
    both_nan = torch.isnan(got) & torch.isnan(expected)
    difference = torch.where(both_nan, torch.zeros_like(difference), difference)
    difference = torch.nan_to_num(difference, nan=float("inf"))
    error = difference.max().item() if difference.numel() else 0.0
    return VerifyResult(size, bool(close.all()), error, where, atol, rtol, int((~close).sum()))


def compare_outputs(
    got: Sequence[Any], expected: Sequence[Any], size: int | None, overrides: dict[str, tuple[float, float]]
) -> VerifyResult:
    """A replay's outputs against the same computation run eagerly, each within its dtype's tolerance (the check
    the vLLM wrappers run on their captures: static_graph.py, gpu_runner.py)."""
    worst = None
    for index, (one, reference) in enumerate(zip(got, expected, strict=True)):
        worst = _worse(worst, _compare(f"output {index}", one, reference, overrides, size))
    return worst or VerifyResult(size, True, 0.0, "no outputs", 0.0, 0.0)


def _worse(a: VerifyResult | None, b: VerifyResult) -> VerifyResult:
    if a is None:
        return b
    if a.ok != b.ok:
        return a if not a.ok else b
    return b if b.max_abs_error > a.max_abs_error else a


def verify_capture(
    reference: Callable[..., Any],
    signature: GraphSignature,
    capture: Capture,
    example_inputs: Sequence[Any],
    device: GraphDevice,
    overrides: dict[str, tuple[float, float]],
    seed: int = 0,
) -> VerifyResult:
    """Replay `capture` against `reference` (eager) on TRIALS random input sets; the worst comparison."""
    generator = torch.Generator().manual_seed(seed)
    state = _written_by_reference(signature, capture)
    device.synchronize()
    saved = [tensor.detach().to("cpu", copy=True) for _, tensor in state]
    worst: VerifyResult | None = None
    try:
        for _ in range(TRIALS):
            inputs = random_inputs(signature, example_inputs, capture, generator)
            eager_args = [value.clone() if index in capture.buffers else value for index, value in enumerate(inputs)]
            expected = reference(*eager_args)
            expected = tuple(expected) if isinstance(expected, list | tuple) else (expected,)
            expected_state = [tensor.detach().to("cpu", copy=True) for _, tensor in state]
            device.synchronize()
            _restore(state, saved)
            for index, buffer in capture.buffers.items():
                device.copy_(buffer, inputs[index])
            capture.graph.replay()
            device.synchronize()
            for index, (got, want) in enumerate(zip(capture.outputs, expected, strict=True)):
                worst = _worse(worst, _compare(f"output {index}", got, want, overrides, capture.size))
            for index, buffer in capture.buffers.items():
                spec = signature.inputs[index]
                if spec.mutated:
                    where = f"input {index} ({spec.name}) as written"
                    worst = _worse(worst, _compare(where, buffer, eager_args[index], overrides, capture.size))
            for (where, tensor), want in zip(state, expected_state, strict=True):
                worst = _worse(worst, _compare(f"{where} as written", tensor, want, overrides, capture.size))
            _restore(state, saved)
    finally:
        device.synchronize()
        _restore(state, saved)
    assert worst is not None, "a captured graph has at least one output"
    return worst
