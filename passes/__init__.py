"""Graph passes of ascend_graph (fusions), installed as `ascend_graph.passes`. One pass per file.

`apply_passes(gm, example_inputs, names)` retraces a dynamo or vLLM FX graph to ATen (`aten_graph.py`: one
canonical spelling per op, in-place writes kept) and runs the selected passes on it, always in the order of
`PASS_NAMES` whatever order they were named in: no-op elimination first (it exposes the patterns), QK-norm + RoPE
before the RMSNorm fusion (which would otherwise take the norm half of it), the decode GEMVs before the RMSNorm
and SwiGLU fusions (it takes the norms and SiLU-muls next to a linear; those two fuse what is left), SwiGLU last.

| pass | replaces | with |
|---|---|---|
| `noop_elimination` | views/reshapes/slices/casts that do nothing, view chains | the input, one view |
| `qk_norm_rope` | RMSNorm over heads + rotary embedding | `ascend_graph::rms_norm_rope` |
| `decode_gemv` | (add+) RMSNorm + linear (+ SiLU-mul / QK-norm + RoPE); linear (+ add) | `rms_norm_linear`, ... |
| `add_rms_norm` | residual add + RMSNorm; a lone RMSNorm | `ascend_graph::add_rms_norm`, `ascend_graph::rms_norm` |
| `silu_and_mul` | silu(gate) * up | `ascend_graph::silu_and_mul` |
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.fx

logger = logging.getLogger(__name__)

PASS_NAMES = ("noop_elimination", "qk_norm_rope", "decode_gemv", "add_rms_norm", "silu_and_mul")


def _pass(name: str) -> Callable[[torch.fx.GraphModule], int]:
    from . import add_rms_norm, decode_layer, noop_elimination, qk_norm_rope, silu_and_mul

    modules = {
        "noop_elimination": noop_elimination,
        "qk_norm_rope": qk_norm_rope,
        "decode_gemv": decode_layer,
        "add_rms_norm": add_rms_norm,
        "silu_and_mul": silu_and_mul,
    }
    return modules[name].apply


@dataclass
class PassReport:
    """What apply_passes did: compute nodes before/after and replacements per pass."""

    ops_before: int = 0
    ops_after: int = 0
    replaced: dict[str, int] = field(default_factory=dict)

    @property
    def fused(self) -> int:
        """Fused ops inserted (no-op eliminations not counted)."""
        return sum(count for name, count in self.replaced.items() if name != "noop_elimination")


def check_pass_names(names: Sequence[str], where: str = "passes") -> tuple[str, ...]:
    """The names, validated: unknown or repeated names raise a ValueError naming the allowed ones."""
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"ascend_graph config: {where}={names!r} must be a list of pass names from {PASS_NAMES}")
    unknown = [name for name in names if name not in PASS_NAMES]
    if unknown:
        raise ValueError(f"ascend_graph config: unknown pass(es) {unknown} in {where}; allowed passes: {PASS_NAMES}")
    if len(set(names)) != len(names):
        raise ValueError(f"ascend_graph config: {where}={list(names)} names a pass twice")
    return tuple(name for name in PASS_NAMES if name in names)


def apply_passes(
    gm: torch.fx.GraphModule, example_inputs: Sequence[Any], names: Sequence[str]
) -> tuple[torch.fx.GraphModule, PassReport]:
    """`gm` retraced to ATen with the named passes applied (a new GraphModule; `gm` is left as it was)."""
    from .aten_graph import count_ops, to_aten

    names = check_pass_names(names)
    aten = to_aten(gm, example_inputs)
    report = PassReport(ops_before=count_ops(aten))
    for name in names:
        report.replaced[name] = _pass(name)(aten)
    aten.graph.lint()
    report.ops_after = count_ops(aten)
    logger.info("ascend_graph passes: %s", report)
    return aten, report


__all__ = ["PASS_NAMES", "PassReport", "apply_passes", "check_pass_names"]
