"""Shared machinery of the pattern passes: tracing patterns the way `aten_graph.to_aten` traces models, and one
lazily built `PatternMatcherPass` per pass.

Patterns are registered with torch inductor's `register_replacement`, traced by `trace_pattern` (make_fx, no
decomposition: the same ATen form as the graphs, where inductor's `fwd_only` would decompose `_to_copy` into
prims). Each form is traced once per activation dtype (float32, bfloat16, float16): low-precision graphs carry
the `_to_copy` casts of RMSNorm's float32 maths, float32 graphs do not, so they are different patterns. Equal
traces are registered once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
from torch._dispatch.python import enable_python_dispatcher
from torch._inductor.pattern_matcher import PatternMatcherPass, register_replacement
from torch.fx.experimental.proxy_tensor import make_fx

PATTERN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# A stand-in value for a scalar argument (eps) while tracing; the matcher turns it into a wildcard. Unusual on
# purpose: any other constant in the pattern equal to it would become a wildcard too.
EPS_PLACEHOLDER = 9.87654e-6


def trace_pattern(fn: Callable[..., Any], args: Sequence[Any], **_: Any) -> torch.fx.GraphModule:
    """`register_replacement`'s trace_fn: ATen ops as make_fx records them, nothing decomposed."""
    with enable_python_dispatcher():
        gm = make_fx(fn, {}, tracing_mode="real")(*args)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


class PatternPass:
    """A named set of (search, replace) forms, registered into one PatternMatcherPass on first use."""

    def __init__(
        self,
        name: str,
        forms: Sequence[tuple[Callable[..., Any], Callable[..., Any]]],
        example_inputs: Callable[[torch.dtype], list[Any]],
        scalars: dict[str, float] | None = None,
        extra_check: Callable[[Any], bool] | None = None,
    ) -> None:
        self.name = name
        self.forms = forms
        self.example_inputs = example_inputs
        self.scalars = scalars or {}
        self.extra_check = extra_check  # register_replacement's: a match is replaced only where it returns True
        self._matcher: PatternMatcherPass | None = None

    @classmethod
    def with_eps(
        cls,
        name: str,
        forms: Sequence[tuple[Callable[..., Any], Callable[..., Any]]],
        example_inputs: Callable[[torch.dtype], list[Any]],
        extra_check: Callable[[Any], bool] | None = None,
    ) -> PatternPass:
        """A pass whose forms take the norm's eps last (matched as any value)."""
        return cls(name, forms, example_inputs, {"eps": EPS_PLACEHOLDER}, extra_check)

    def _build(self) -> PatternMatcherPass:
        matcher = PatternMatcherPass(pass_name=f"ascend_graph_{self.name}")
        seen: set[str] = set()
        for dtype in PATTERN_DTYPES:
            inputs = [*self.example_inputs(dtype), *self.scalars.values()]
            for search, replace in self.forms:
                key = trace_pattern(search, inputs).code
                if key in seen:
                    continue
                seen.add(key)
                checks = {} if self.extra_check is None else {"extra_check": self.extra_check}
                register_replacement(
                    search, replace, inputs, trace_pattern, matcher, scalar_workaround=dict(self.scalars), **checks
                )
        return matcher

    def __call__(self, gm: torch.fx.GraphModule) -> int:
        """Rewrite every match in `gm` in place; returns the number of replacements."""
        if self._matcher is None:
            self._matcher = self._build()
        count = self._matcher.apply(gm.graph)
        if count:
            gm.graph.eliminate_dead_code()
            gm.recompile()
        return count
