"""The backend's configuration: one frozen, validated dataclass.

Environment variables are read here and nowhere else (`env_flags`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LOWERINGS = ("auto", "aten", "inductor", "npugraph_ex", "torchair")
DEVICES = ("auto", "cpu", "cuda", "npu")
OUTPUT_MODES = ("clone", "static")
VERIFY_DTYPES = ("float64", "float32", "bfloat16", "float16")
DEFAULT_CAPTURE_SIZES = (1, 2, 4, 8, 16, 32)


def _env_on(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def env_flags() -> dict[str, bool]:
    """The environment switches ascend_graph honours: ASCEND_GRAPH_DEBUG=1 turns on debug checks everywhere,
    ASCEND_GRAPH_VERIFY=1 the shadow-eager verifier."""
    return {"debug": _env_on("ASCEND_GRAPH_DEBUG"), "verify": _env_on("ASCEND_GRAPH_VERIFY")}


def _require(condition: bool, field: str, allowed: str, got: Any) -> None:
    if not condition:
        raise ValueError(f"ascend_graph config: {field}={got!r} is not allowed; {field} must be {allowed}")


@dataclass(frozen=True)
class GraphConfig:
    """How the `ascend_graph` backend captures and replays.

    capture_sizes: sizes of the dynamic (batch/token) dimension to capture, one graph each; runtime sizes pad up
        to the nearest one, larger sizes run eagerly.
    lowering: what each captured piece runs: "aten" (the FX graph's ops as they are), "inductor" (compiled first,
        CUDA/CPU), "npugraph_ex" or "torchair" (NPU, unverified; see lowering.py), or "auto" (inductor on CUDA,
        npugraph_ex on NPU, aten on CPU).
    device: "auto" picks the device of the graph's tensor inputs.
    debug: check on every replay that by-reference inputs (weights, caches) still sit at their captured address.
    warmup_iters: eager runs before each capture (lazy initialisation must not be captured).
    output_mode: "clone" returns fresh tensors (safe default for torch.compile users); "static" returns views of
        the graph's static outputs, overwritten by the next replay (what vLLM's runners expect).
    pad_value: value written into the padded tail of dynamic inputs.
    pad_values: per-argument pad values by the forward argument's name, e.g. {"slots": 0} where slot 0 is a
        scratch slot: padded rows run through the model, so stateful inputs (cache slots, positions) must send
        them somewhere harmless.
    verify: after capture, replay every size against eager (the FX graph's own ops) on random inputs; a size whose
        outputs differ beyond the tolerance is reported and runs eagerly (`ascend_graph.verify`).
    verify_tolerances: per floating dtype name, (atol, rtol) replacing the verifier's defaults, e.g.
        {"bfloat16": (0.1, 0.05)}.
    batch_dim: which dimension is the batch/token dimension, the one dimension graph mode buckets and pads (no
        other: padding a sequence dimension that indexes a table, or that attention mixes, would change answers).
        "auto" (default): the dimensions marked with `torch._dynamo.mark_dynamic` where the graph's inputs carry
        such marks, else dimension 0 of the dynamic inputs; an integer d: dimension d of the dynamic inputs;
        {"input_ids": 0}: that dimension of the named forward arguments; "none": bucket nothing (each graph is
        captured at the sizes it was traced with: for models that mix rows, where padding would change answers).
        A graph where that dimension is not dynamic (dynamo compiled it at batch 1, where it specialises size 1)
        is captured as it is, at the sizes it was traced with; every other dynamic size is pinned to its traced
        value and calls with another value run eagerly (logged). When the named dimension holds different dynamic
        sizes in different inputs the choice is ambiguous and compiling raises `AmbiguousBatchDimError`.
    passes: fusion passes run on the graph before lowering (names from `ascend_graph.passes.PASS_NAMES`, or
        "all"); they always run in that order. Default: none, so a graph runs the ops the model wrote unless
        fusion is asked for (the passes retrace the graph to ATen and cost compile time).
    """

    capture_sizes: tuple[int, ...] = DEFAULT_CAPTURE_SIZES
    lowering: str = "auto"
    device: str = "auto"
    debug: bool = False
    warmup_iters: int = 2
    output_mode: str = "clone"
    pad_value: int = 0
    pad_values: tuple[tuple[str, int], ...] = ()
    verify: bool = False
    verify_tolerances: tuple[tuple[str, float, float], ...] = ()
    passes: tuple[str, ...] = ()
    batch_dim: str | int | tuple[tuple[str, int], ...] = "auto"

    def __post_init__(self) -> None:
        sizes = self.capture_sizes
        _require(
            isinstance(sizes, tuple) and len(sizes) > 0,
            "capture_sizes",
            "a non-empty list of positive integers",
            sizes,
        )
        for size in sizes:
            _require(
                isinstance(size, int) and not isinstance(size, bool) and size > 0,
                "capture_sizes",
                "a non-empty list of positive integers",
                sizes,
            )
        _require(len(set(sizes)) == len(sizes), "capture_sizes", "a list without duplicates", sizes)
        object.__setattr__(self, "capture_sizes", tuple(sorted(sizes)))
        _require(self.lowering in LOWERINGS, "lowering", f"one of {LOWERINGS}", self.lowering)
        _require(self.device in DEVICES, "device", f"one of {DEVICES}", self.device)
        _require(isinstance(self.debug, bool), "debug", "true or false", self.debug)
        _require(
            isinstance(self.warmup_iters, int) and self.warmup_iters >= 1,
            "warmup_iters",
            "an integer >= 1",
            self.warmup_iters,
        )
        _require(self.output_mode in OUTPUT_MODES, "output_mode", f"one of {OUTPUT_MODES}", self.output_mode)
        _require(isinstance(self.pad_value, int), "pad_value", "an integer", self.pad_value)
        pads = self.pad_values
        if isinstance(pads, Mapping):
            pads = tuple(sorted(pads.items()))
        _require(
            isinstance(pads, tuple) and all(isinstance(name, str) and isinstance(value, int) for name, value in pads),
            "pad_values",
            "a mapping from argument name to integer",
            self.pad_values,
        )
        object.__setattr__(self, "pad_values", pads)
        _require(isinstance(self.verify, bool), "verify", "true or false", self.verify)
        object.__setattr__(self, "verify_tolerances", _tolerances(self.verify_tolerances))
        object.__setattr__(self, "batch_dim", _batch_dim(self.batch_dim))
        from ascend_graph.passes import PASS_NAMES, check_pass_names

        passes = PASS_NAMES if self.passes == "all" else self.passes
        object.__setattr__(self, "passes", check_pass_names(passes if isinstance(passes, str) else tuple(passes)))

    @property
    def max_capture_size(self) -> int:
        return self.capture_sizes[-1]

    @property
    def pad_value_map(self) -> dict[str, int]:
        return dict(self.pad_values)

    @property
    def verify_tolerance_map(self) -> dict[str, tuple[float, float]]:
        return {name: (atol, rtol) for name, atol, rtol in self.verify_tolerances}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> GraphConfig:
        """Build from `torch.compile(..., options={...})`; unknown keys raise a ValueError naming the allowed."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"ascend_graph config: unknown option(s) {unknown}; allowed options are {list(cls.field_names())}"
            )
        if "capture_sizes" in options and isinstance(options["capture_sizes"], list | range):
            options["capture_sizes"] = tuple(options["capture_sizes"])
        flags = env_flags()
        if flags["debug"]:
            options["debug"] = True
        if flags["verify"]:
            options["verify"] = True
        return cls(**options)


def _is_dim(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _batch_dim(value: Any) -> str | int | tuple[tuple[str, int], ...]:
    """ "auto", a dimension index, or {argument name: dimension} (or its tuple form), validated; mappings sorted."""
    allowed = '"auto", "none", a dimension index >= 0, or a non-empty mapping from argument name to dimension index'
    if value in ("auto", "none") or _is_dim(value):
        return value
    items = value.items() if isinstance(value, Mapping) else value
    entries = tuple(tuple(item) for item in items) if _pairs(items) else ()
    _require(
        len(entries) > 0
        and all(len(entry) == 2 and isinstance(entry[0], str) and _is_dim(entry[1]) for entry in entries),
        "batch_dim",
        allowed,
        value,
    )
    return tuple(sorted(entries))


def _pairs(items: Any) -> bool:
    if not isinstance(items, Iterable) or isinstance(items, str):
        return False
    return all(isinstance(item, tuple | list) for item in items)


def _tolerances(value: Any) -> tuple[tuple[str, float, float], ...]:
    """{"bfloat16": (atol, rtol)} (or the tuple form) -> sorted ((name, atol, rtol), ...), validated."""
    allowed = f"a mapping from a dtype name in {VERIFY_DTYPES} to (atol, rtol), two non-negative numbers"
    items = value.items() if isinstance(value, Mapping) else value
    try:
        entries = [(name, *pair) for name, pair in items] if isinstance(value, Mapping) else list(items)
    except TypeError:
        entries = None
    _require(entries is not None, "verify_tolerances", allowed, value)
    result = []
    for entry in entries:
        _require(isinstance(entry, tuple | list) and len(entry) == 3, "verify_tolerances", allowed, value)
        name, atol, rtol = entry
        _require(name in VERIFY_DTYPES, "verify_tolerances", allowed, value)
        for number in (atol, rtol):
            _require(
                isinstance(number, int | float) and not isinstance(number, bool) and number >= 0,
                "verify_tolerances",
                allowed,
                value,
            )
        result.append((name, float(atol), float(rtol)))
    return tuple(sorted(result))
