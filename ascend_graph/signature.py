"""What a graph's inputs and outputs look like at each capture size, resolved with sympy.

Dynamo hands the backend an FX graph whose placeholders carry fake tensors with symbolic sizes (`s0`, `2*s0`)
and SymInt placeholders. `GraphSignature` reads them once:

- it finds the one free symbol that is bucketed (the batch/token dimension the user names with the
  `batch_dim` option or `torch._dynamo.mark_dynamic`, by default dimension 0), where it can be read at run time
  (a tensor dimension or a SymInt argument), and the range dynamo's guards allow for it;
- it classifies every input (`InputKind`): *dynamic* tensors are copied into static buffers sized for the
  bucket, *by reference* tensors (weights, module buffers, inputs the graph writes) are captured at their
  address, other fixed-size tensors are copied into a static buffer, SymInts are baked;
- for every size it evaluates each input's and output's shape with sympy (`sizes_at`), and picks the bucket a
  run-time size pads up to (`bucket_for`).

Only the batch dimension is ever bucketed: any other free symbol (a sequence length that indexes a position
table, a size that attention mixes) is pinned to its compile-time value, and a call with another value runs
eagerly. A graph in which the batch dimension is not symbolic (dynamo specialises size 1, so a graph compiled at
batch 1 has none) is captured as it is, at its traced sizes, with every symbol pinned. Where the named dimension
holds different symbols in different inputs, the choice is ambiguous: `AmbiguousBatchDimError` names them.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sympy
import torch
import torch.fx

from .errors import AmbiguousBatchDimError, InputDeviceError, InputDtypeError, InputRankError, InputShapeError
from .mutation import mutated_input_indices


class InputKind(enum.Enum):
    DYNAMIC = "dynamic"  # tensor with a symbolic size: copied into a static buffer, padded
    PARAMETER = "parameter"  # nn.Parameter: captured by reference, address trusted (checked in debug mode)
    BY_REFERENCE = "by_reference"  # module buffer or written input of fixed size: captured by reference,
    # its address checked on every call
    COPIED = "copied"  # any other fixed-size tensor: copied into a static buffer unless it is that buffer
    HOST_VALUE = "host_value"  # a one-element CPU tensor (dynamo's unspecialised floats): a device graph bakes
    # its value at capture, so each call compares the value and runs eagerly if it changed
    SYMINT = "symint"  # a symbolic integer argument: baked into the capture
    CONSTANT = "constant"  # any other value: baked into the capture


@dataclass(frozen=True)
class InputSpec:
    index: int
    name: str  # the user's argument name where dynamo knows it (for pad values and error messages)
    kind: InputKind
    shape: tuple[sympy.Expr, ...] = ()  # tensors: one expression per dimension; SYMINT: (expr,)
    dtype: torch.dtype | None = None
    device: torch.device | None = None
    mutated: bool = False  # the graph writes it in place: DYNAMIC inputs are copied back after replay


@dataclass(frozen=True)
class OutputSpec:
    is_tensor: bool
    shape: tuple[sympy.Expr, ...] = ()  # tensors: per dimension; SymInt/int outputs: (expr,)
    constant: Any = None  # outputs that are neither tensors nor symbolic ints


def _expr(value: Any) -> sympy.Expr:
    if isinstance(value, torch.SymInt):
        return sympy.sympify(value.node.expr)
    return sympy.Integer(int(value))


def _arg_name(node: torch.fx.Node) -> str:
    source = getattr(node.meta.get("grapharg"), "source", None)
    local_name = getattr(source, "local_name", None)
    if local_name is not None:
        return str(local_name)
    name = getattr(source, "name", None)
    if callable(name):  # older torch: Source.name() is a method
        name = name()
    return str(name) if name is not None else node.name


def _classify(index: int, node: torch.fx.Node, example: Any, mutated: bool) -> InputSpec:
    value = node.meta.get("example_value", example)
    name = _arg_name(node)
    if isinstance(value, torch.SymInt):
        return InputSpec(index, name, InputKind.SYMINT, (_expr(value),))
    if not isinstance(value, torch.Tensor):
        return InputSpec(index, name, InputKind.CONSTANT)
    shape = tuple(_expr(size) for size in value.shape)
    symbolic = any(expr.free_symbols for expr in shape)
    if symbolic:
        kind = InputKind.DYNAMIC
    elif isinstance(example, torch.nn.Parameter) and not mutated:
        kind = InputKind.PARAMETER
    elif mutated or hasattr(example, "_dynamo_static_input_type"):
        kind = InputKind.BY_REFERENCE
    elif example.device.type == "cpu" and example.numel() == 1:
        kind = InputKind.HOST_VALUE
    else:
        kind = InputKind.COPIED
    return InputSpec(index, name, kind, shape, example.dtype, example.device, mutated)


def _output_spec(value: Any) -> OutputSpec:
    if isinstance(value, torch.Tensor):
        return OutputSpec(True, tuple(_expr(size) for size in value.shape))
    if isinstance(value, torch.SymInt | int) and not isinstance(value, bool):
        return OutputSpec(False, (_expr(value),))
    return OutputSpec(False, constant=value)


def _read(args: Sequence[Any], locator: tuple[int, int | None]) -> int:
    index, dim = locator
    return int(args[index]) if dim is None else int(args[index].shape[dim])


BatchDim = str | int | tuple[tuple[str, int], ...]  # GraphConfig.batch_dim, validated


def _marked_dims(example: Any) -> frozenset[int]:
    """Dimensions the user marked with torch._dynamo.mark_dynamic on this input (dynamo keeps them on it)."""
    return frozenset(getattr(example, "_dynamo_dynamic_indices", None) or ())


def _batch_candidates(
    inputs: Sequence[InputSpec], example_inputs: Sequence[Any], batch_dim: BatchDim
) -> tuple[list[tuple[InputSpec, int]], str]:
    """(input, dimension) pairs that hold the batch dimension, and how the user named it (for messages)."""
    dynamic = [spec for spec in inputs if spec.kind is InputKind.DYNAMIC]
    if batch_dim == "none":
        return [], "batch_dim='none'"
    if batch_dim == "auto":
        marked = [(spec, dim) for spec in dynamic for dim in sorted(_marked_dims(example_inputs[spec.index]))]
        if marked:
            return marked, "batch_dim='auto': the dimensions marked with torch._dynamo.mark_dynamic"
        batch_dim = 0
    if isinstance(batch_dim, int):
        return [(spec, batch_dim) for spec in dynamic if len(spec.shape) > batch_dim], f"batch_dim={batch_dim}"
    named = dict(batch_dim)
    picked = [(spec, named[spec.name]) for spec in dynamic if spec.name in named and len(spec.shape) > named[spec.name]]
    return picked, f"batch_dim={named}"


def choose_batch_symbol(
    inputs: Sequence[InputSpec], example_inputs: Sequence[Any], batch_dim: BatchDim
) -> tuple[sympy.Symbol | None, str]:
    """The bucketed symbol (None when the named dimension is not dynamic in this graph) and where it is; raises
    AmbiguousBatchDimError when the named dimension holds different symbols."""
    candidates, how = _batch_candidates(inputs, example_inputs, batch_dim)
    found: dict[sympy.Symbol, list[str]] = {}
    for spec, dim in candidates:
        if isinstance(spec.shape[dim], sympy.Symbol):
            found.setdefault(spec.shape[dim], []).append(f"{spec.name} dim {dim}")
    if len(found) > 1:
        listed = "; ".join(f"{symbol}: {', '.join(places)}" for symbol, places in found.items())
        raise AmbiguousBatchDimError(
            f"ascend_graph: {how} names {len(found)} different dynamic sizes ({listed}); graph mode buckets one "
            "batch/token dimension only: name it with options={'batch_dim': {'<argument>': <dim>}} or "
            "torch._dynamo.mark_dynamic(<tensor>, <dim>) on that dimension alone, or mark the others static "
            "(torch._dynamo.mark_static)"
        )
    if not found:
        return None, f"no dynamic size at {how}"
    symbol, places = next(iter(found.items()))
    return symbol, f"{symbol} ({', '.join(places)}; {how})"


class GraphSignature:
    """Inputs, outputs and buckets of one dynamo graph."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], batch_dim: BatchDim = "auto") -> None:
        placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
        mutated = mutated_input_indices(gm)
        self.inputs = tuple(
            _classify(index, node, example, index in mutated)
            for index, (node, example) in enumerate(zip(placeholders, example_inputs, strict=True))
        )
        returned = gm.graph.output_node().args[0]
        returned = returned if isinstance(returned, list | tuple) else (returned,)
        self.outputs = tuple(
            _output_spec(node.meta.get("example_value") if isinstance(node, torch.fx.Node) else node)
            for node in returned
        )
        self.output_is_sequence = isinstance(gm.graph.output_node().args[0], list | tuple)
        symbols: set[sympy.Symbol] = set()
        for spec in self.inputs:
            for expr in spec.shape:
                symbols |= expr.free_symbols
        self.symbols = tuple(sorted(symbols, key=str))
        self.unsupported_reason: str | None = None
        self.symbol, self.batch_where = choose_batch_symbol(self.inputs, example_inputs, batch_dim)
        self.pinned: dict[sympy.Symbol, int] = {}
        self._locator: tuple[int, int | None] | None = None
        self._pin_locators: dict[sympy.Symbol, tuple[int, int | None]] = {}
        self.min_size, self.max_size = 1, None
        locators = {symbol: self._find_locator(symbol) for symbol in self.symbols}
        missing = [str(symbol) for symbol, locator in locators.items() if locator is None]
        if missing:
            self.unsupported_reason = f"no input has a size equal to {missing} to read it from at run time"
        else:
            self._locator = locators.get(self.symbol) if self.symbol is not None else None
            self._pin_locators = {s: loc for s, loc in locators.items() if s != self.symbol}  # type: ignore[misc]
            self.pinned = {s: _read(example_inputs, loc) for s, loc in self._pin_locators.items()}
            if self.symbol is not None:
                self._read_range(placeholders)
        bad_outputs = [spec for spec in self.outputs if not spec.is_tensor and spec.constant is not None]
        if bad_outputs and self.unsupported_reason is None:
            self.unsupported_reason = f"graph returns non-tensor values {[s.constant for s in bad_outputs]}"
        # sympy is evaluated once per (input or output, size); the hot path reads this cache.
        self._sizes: dict[tuple[str, int, int | None], tuple[int, ...]] = {}

    def _find_locator(self, symbol: sympy.Symbol) -> tuple[int, int | None] | None:
        for spec in self.inputs:
            if spec.kind is InputKind.SYMINT and spec.shape[0] == symbol:
                return (spec.index, None)
        for spec in self.inputs:
            if spec.kind is InputKind.DYNAMIC:
                for dim, expr in enumerate(spec.shape):
                    if expr == symbol:
                        return (spec.index, dim)
        return None

    def _read_range(self, placeholders: Sequence[torch.fx.Node]) -> None:
        """The range dynamo's guards allow for the bucketed symbol (e.g. >= 2 under 0/1 specialisation)."""
        for node in placeholders:
            value = node.meta.get("example_value")
            sizes = value.shape if isinstance(value, torch.Tensor) else (value,)
            for size in sizes:
                if isinstance(size, torch.SymInt):
                    bounds = size.node.shape_env.var_to_range.get(self.symbol)
                    if bounds is not None:
                        self.min_size = max(1, int(bounds.lower))
                        upper = bounds.upper  # torch uses int_oo (not sympy.oo) for "no bound"
                        self.max_size = int(upper) if isinstance(upper, sympy.Integer) else None
                    return

    @property
    def is_static(self) -> bool:
        return self.symbol is None

    def valid_sizes(self, capture_sizes: Sequence[int]) -> tuple[int, ...]:
        """The capture sizes dynamo's guards allow for the bucketed symbol (e.g. not 1 when 0/1 specialised)."""
        return tuple(
            size for size in capture_sizes if size >= self.min_size and (self.max_size is None or size <= self.max_size)
        )

    def _evaluate(self, exprs: tuple[sympy.Expr, ...], size: int | None) -> tuple[int, ...]:
        values: dict[sympy.Symbol, int] = dict(self.pinned)
        if self.symbol is not None and size is not None:
            values[self.symbol] = size
        return tuple(int(expr.subs(values)) for expr in exprs)

    def input_sizes(self, spec: InputSpec, size: int | None) -> tuple[int, ...]:
        """Concrete sizes of input `spec` when the bucketed dimension is `size`."""
        key = ("in", spec.index, size)
        if key not in self._sizes:
            self._sizes[key] = self._evaluate(spec.shape, size)
        return self._sizes[key]

    def output_sizes(self, index: int, size: int | None) -> tuple[int, ...]:
        """Concrete sizes of output `index` (a SymInt output: its value) when the bucketed dimension is `size`."""
        key = ("out", index, size)
        if key not in self._sizes:
            self._sizes[key] = self._evaluate(self.outputs[index].shape, size)
        return self._sizes[key]

    def runtime_size(self, args: Sequence[Any]) -> int | None:
        """The bucketed dimension's size in this call (None for static graphs)."""
        return None if self._locator is None else _read(args, self._locator)

    def pinned_mismatch(self, args: Sequence[Any]) -> str | None:
        """Why this call cannot replay because a pinned (non-bucketed) symbol has another value, else None."""
        for symbol, locator in self._pin_locators.items():
            value = _read(args, locator)
            if value != self.pinned[symbol]:
                bucketed = "no dimension of this graph" if self.symbol is None else f"only {self.symbol}"
                return (
                    f"dynamic size {symbol}={value} differs from {self.pinned[symbol]} it was captured at; "
                    f"ascend_graph buckets {bucketed}, the batch dimension ({self.batch_where}); other dynamic "
                    "sizes are pinned (mark them static, or name the batch dimension with the batch_dim option)"
                )
        return None

    @staticmethod
    def bucket_for(size: int | None, sizes: Sequence[int]) -> int | None:
        """Smallest capture size >= `size`; None when `size` is above them all."""
        if size is None:
            return None
        position = bisect.bisect_left(sizes, size)
        return sizes[position] if position < len(sizes) else None

    def validate(self, spec: InputSpec, value: Any, size: int | None) -> None:
        """Raise a named error when `value` cannot be fed to the graph captured for `spec`."""
        if not isinstance(value, torch.Tensor):
            raise InputShapeError(f"input {spec.index} ({spec.name}): expected a tensor, got {type(value).__name__}")
        where = f"input {spec.index} ({spec.name})"
        if value.dtype != spec.dtype:
            raise InputDtypeError(f"{where}: dtype {value.dtype}, but the graph was captured with {spec.dtype}")
        if value.device != spec.device:
            raise InputDeviceError(f"{where}: device {value.device}, but the graph was captured on {spec.device}")
        if value.dim() != len(spec.shape):
            raise InputRankError(
                f"{where}: {value.dim()} dimensions, but the graph was captured with {len(spec.shape)}"
            )
        expected = self.input_sizes(spec, size)
        if tuple(value.shape) != expected:
            raise InputShapeError(
                f"{where}: shape {tuple(value.shape)}, but shape {tuple(str(e) for e in spec.shape)} "
                f"means {expected} at size {size}"
            )
