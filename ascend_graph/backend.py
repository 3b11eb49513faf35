"""The `ascend_graph` dynamo backend.

`torch.compile(model, backend="ascend_graph", dynamic=True, options={"capture_sizes": [1, 2, 4, 8]})`

For each FX graph dynamo hands over, the backend reads its signature (which dimension is dynamic, which inputs
are weights or caches), lowers it (ATen ops as they are, inductor, or on NPU npugraph_ex / torchair), and on the
first call captures one device graph per capture size, largest first, into one shared pool. Each later call pads up
to the nearest capture size, copies the dynamic inputs into that graph's static buffers, replays it and slices the
outputs back. Calls it cannot serve by replay run eagerly, each reason logged once and counted.

Reliability: a size whose capture fails (out of memory, device resources) runs eagerly with advice naming the
setting to change (`fallbacks.py`); with `verify=True` each size is replayed against eager on random inputs after
capture and a size that disagrees runs eagerly (`verify.py`); `report()` lists sizes, graph memory, passes and
every fallback with its reason.

What the compiled callable deliberately does not do: autograd (graph mode is for inference; with grad enabled and
inputs requiring grad it runs eagerly), and capturing more than one dynamic dimension.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from .capture import Capture, capture_all, pad_value_for
from .config import GraphConfig
from .counters import Count, bump
from .device import GraphDevice, get_device
from .errors import NonFiniteInputError, StaticInputMovedError
from .fallbacks import VERIFY_MISMATCH, SizeFallback, verify_mismatch
from .lowering import lower, resolve_lowering
from .passes import PassReport, apply_passes
from .report import graph_report
from .signature import GraphSignature, InputKind
from .verify import VerifyResult, verify_capture

logger = logging.getLogger(__name__)


# Exceptions inductor raises on purpose for dynamo to catch (retrace the frame, skip it): never fallbacks.
_DYNAMO_CONTROL_FLOW = (torch._dynamo.exc.RestartAnalysis, torch._dynamo.exc.SkipFrame)


def _device_kind(config: GraphConfig, example_inputs: Sequence[Any]) -> str:
    if config.device != "auto":
        return config.device
    kinds = {value.device.type for value in example_inputs if isinstance(value, torch.Tensor)}
    return next((kind for kind in ("npu", "cuda") if kind in kinds), "cpu")


class GraphCompiled:
    """The callable the backend returns for one FX graph: replays captured graphs, or runs eagerly."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], config: GraphConfig) -> None:
        self.config = config
        self.signature = GraphSignature(gm, example_inputs, config.batch_dim)
        self.device: GraphDevice = get_device(_device_kind(config, example_inputs))
        self.lowering = resolve_lowering(config.lowering, self.device.kind)
        # The verifier's eager reference: the FX graph's own ops, kept apart from what the lowering may rewrite.
        self.reference: Callable[..., Any] = (
            torch.fx.GraphModule(gm, copy.deepcopy(gm.graph)).forward
            if config.verify and (self.lowering != "aten" or config.passes)
            else gm.forward
        )
        self.pass_report: PassReport | None = None
        self.runnable: Callable[..., Any] = gm.forward
        lowering_failure = self._lower(gm, example_inputs)
        self.sizes: tuple[int | None, ...] = (
            (None,) if self.signature.is_static else self.signature.valid_sizes(config.capture_sizes)
        )
        self.captures: dict[int | None, Capture] = {}
        self.size_fallbacks: dict[int | None, SizeFallback] = {}  # sizes served eagerly, and why
        self.verify_results: list[VerifyResult] = []
        # Inputs checked on every call, precomputed: the hot path must not walk hundreds of weights.
        self._checked = tuple(
            spec
            for spec in self.signature.inputs
            if spec.kind in (InputKind.BY_REFERENCE, InputKind.HOST_VALUE)
            or (spec.kind is InputKind.PARAMETER and config.debug)
        )
        self._example_inputs: list[Any] | None = list(example_inputs)
        self._logged: set[str] = set()
        self.fallback_reason = lowering_failure or self._fallback_reason(example_inputs)
        if self.fallback_reason is None and self.signature.is_static and self.signature.pinned:
            logger.info(
                "ascend_graph: graph has no batch dimension (%s): captured as traced, with %s",
                self.signature.batch_where,
                ", ".join(f"{symbol}={value}" for symbol, value in self.signature.pinned.items()),
            )
        if self.fallback_reason is not None:
            self._example_inputs = None
            bump(Count.EAGER_FALLBACKS)
            self._log_once(f"ascend_graph: graph runs eagerly: {self.fallback_reason}")
        bump(Count.COMPILES)

    def _lower(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> str | None:
        """Fusion passes (on the ATen retrace; the signature stays the one of dynamo's graph), then the lowering.
        If either raises, the graph's own ops run eagerly: the reason with advice, else None."""
        stage = "fusion passes" if self.config.passes else f"{self.lowering} lowering"
        try:
            if self.config.passes:
                gm, self.pass_report = apply_passes(gm, example_inputs, self.config.passes)
                bump(Count.FUSED_OPS, self.pass_report.fused)
                stage = f"{self.lowering} lowering"
            self.runnable = lower(gm, example_inputs, self.lowering)
        except _DYNAMO_CONTROL_FLOW:
            raise  # not failures: dynamo's signals to retrace the frame (e.g. inductor tensorifying a scalar)
        except Exception as error:  # noqa: BLE001 - graph mode never fails a call for its own reasons
            logger.debug("ascend_graph: %s failed", stage, exc_info=True)
            self.pass_report = None
            return (
                f"{stage} failed with {type(error).__name__}: {_first_line(error)}; the graph's own ops run "
                "instead. Advice: try lowering='aten' and no passes, or report the graph (TORCH_LOGS=graph_code)"
            )
        return None

    def _fallback_reason(self, example_inputs: Sequence[Any]) -> str | None:
        if self.signature.unsupported_reason is not None:
            return self.signature.unsupported_reason
        if not self.sizes:
            return f"no capture size in {self.config.capture_sizes} fits the size range dynamo allows"
        if torch.is_grad_enabled() and any(
            isinstance(value, torch.Tensor) and value.requires_grad for value in example_inputs
        ):
            return "graph mode is inference-only; call under torch.no_grad() or torch.inference_mode()"
        if self.lowering != "aten":
            for spec in self.signature.inputs:
                example = example_inputs[spec.index]
                if spec.kind is InputKind.DYNAMIC and not example.is_contiguous():
                    return (
                        f"input {spec.index} ({spec.name}) was traced non-contiguous (strides {example.stride()}); "
                        f"the {self.lowering} lowering bakes input strides in, but static buffers are contiguous: "
                        "pass .contiguous() inputs or use lowering='aten'"
                    )
        return None

    def _log_once(self, message: str, key: str | None = None) -> None:
        key = message if key is None else key
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(message)

    def _eager(self, args: Sequence[Any], reason: str, key: str) -> Any:
        """Serve one call eagerly; each kind of reason (`key`) is logged once per graph."""
        self._log_once(f"ascend_graph: running eagerly (logged once): {reason}", key)
        bump(Count.EAGER_CALLS)
        return self.runnable(*args)

    def capture(self) -> None:
        """Capture every size now (the first call does this by itself); once only."""
        if self._example_inputs is None:
            return  # captured already, or the whole graph runs eagerly
        self.captures = capture_all(
            self.runnable,
            self.signature,
            self._example_inputs,
            self.sizes,
            self.device,
            self.config.warmup_iters,
            self.config.pad_value,
            self.config.pad_value_map,
            failures=self.size_fallbacks,
        )
        for fallback in self.size_fallbacks.values():
            logger.warning(fallback.message())
        if self.config.verify:
            self._verify(self._example_inputs)
        self._example_inputs = None  # do not keep the caller's first inputs alive

    def _verify(self, example_inputs: Sequence[Any]) -> None:
        """Replay each size against eager; a size that disagrees is dropped and runs eagerly (the reference)."""
        for size in list(self.captures):
            try:
                result = verify_capture(
                    self.reference,
                    self.signature,
                    self.captures[size],
                    example_inputs,
                    self.device,
                    self.config.verify_tolerance_map,
                )
            except Exception as error:  # noqa: BLE001 - an unverifiable size runs eagerly, never fails the call
                logger.debug("ascend_graph: verify of size %s raised", size, exc_info=True)
                bump(Count.VERIFY_ERRORS)
                del self.captures[size]
                detail = f"verify raised {type(error).__name__}: {_first_line(error)}"
                self.size_fallbacks[size] = verify_mismatch(size, detail)
                logger.warning(self.size_fallbacks[size].message())
                continue
            self.verify_results.append(result)
            bump(Count.VERIFIED_SIZES)
            if result.ok:
                logger.info("ascend_graph: verify: %s", result.message())
                continue
            bump(Count.VERIFY_MISMATCHES)
            del self.captures[size]  # frees its static buffers and outputs
            self.size_fallbacks[size] = verify_mismatch(size, f"verify: {result.message()}")
            logger.warning(self.size_fallbacks[size].message())

    def __call__(self, *args: Any) -> Any:
        if self.fallback_reason is not None:
            bump(Count.EAGER_CALLS)
            return self.runnable(*args)
        pinned = self.signature.pinned_mismatch(args)
        if pinned is not None:
            return self._eager(args, pinned, "pinned")
        size = self.signature.runtime_size(args)
        bucket = size if self.signature.is_static else GraphSignature.bucket_for(size, self.sizes)
        if bucket is None and not self.signature.is_static:
            return self._eager(args, f"size {size} is above the largest capture size {self.sizes[-1]}", "over-max")
        if self._example_inputs is not None:
            self.capture()
        fallback = self.size_fallbacks.get(bucket)
        if fallback is not None:
            bump(Count.EAGER_CALLS)
            self._log_once(
                f"ascend_graph: running eagerly (logged once): size {bucket} ({fallback.cause}): {fallback.reason}",
                f"size-{bucket}",
            )
            eager = self.reference if fallback.cause == VERIFY_MISMATCH else self.runnable
            return eager(*args)
        capture = self.captures[bucket]
        moved = self._moved_input(capture, args)
        if moved is not None:
            return self._eager(args, moved, "moved")
        self._feed(capture, args, size)
        try:
            capture.graph.replay()
            self._copy_back(capture, args, size)
            if self.device.host_reads_outputs:
                self.device.current_stream().synchronize()
        except Exception as error:  # noqa: BLE001 - e.g. the CPU stream's StreamError around the model's own error
            bump(Count.REPLAY_FAILURES)
            reason = f"replay of size {bucket} raised {type(error).__name__}: {_first_line(error)}"
            # eager gives the caller what eager mode would: the model's own exception, or the right answer
            return self._eager(args, f"{reason}; this call runs eagerly", f"replay-{bucket}")
        bump(Count.REPLAYS)
        return self._outputs(capture, size)

    def _moved_input(self, capture: Capture, args: Sequence[Any]) -> str | None:
        """By-reference inputs must sit where they were captured (parameters are trusted outside debug mode);
        host values must equal the captured ones."""
        for spec in self._checked:
            if spec.kind is InputKind.HOST_VALUE:
                if args[spec.index].item() != capture.args[spec.index].item():
                    return f"input {spec.index} ({spec.name}) changed its value, which the graph baked in"
                continue
            value, captured = args[spec.index], capture.args[spec.index]
            if value.data_ptr() != captured.data_ptr():
                message = (
                    f"input {spec.index} ({spec.name}) was captured by reference at {captured.data_ptr():#x} "
                    f"but is now at {value.data_ptr():#x}; keep weights and caches at stable addresses"
                )
                if self.config.debug:
                    raise StaticInputMovedError(message)
                return message
        return None

    def _feed(self, capture: Capture, args: Sequence[Any], size: int | None) -> None:
        """Copy dynamic and copied inputs into the capture's static buffers and pad the tail. Every input is
        checked before any is copied; copy_ takes any layout, so non-contiguous inputs land correctly."""
        for index in capture.buffers:
            self.signature.validate(self.signature.inputs[index], args[index], size)
            if self.config.debug:
                _check_finite(self.signature.inputs[index], args[index])
        for index, buffer in capture.buffers.items():
            spec = self.signature.inputs[index]
            value = args[index]
            if value.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr():
                if value.data_ptr() == buffer.data_ptr() and value.shape == buffer.shape:
                    if value.stride() == buffer.stride():
                        continue  # the caller already wrote into our buffer
                # another view of our own buffer (a prefix, another layout): padding or copying in place would
                # overwrite what it reads, so take its values first
                value = value.clone()
            if spec.kind is InputKind.COPIED or value.shape == buffer.shape:
                self.device.copy_(buffer, value)
                continue
            region = buffer[tuple(slice(0, length) for length in value.shape)]
            self.device.fill_(buffer, pad_value_for(spec, self.config.pad_value, self.config.pad_value_map))
            self.device.copy_(region, value)

    def _copy_back(self, capture: Capture, args: Sequence[Any], size: int | None) -> None:
        """Inputs the graph writes in place get the written values back, as in eager mode."""
        for index, buffer in capture.buffers.items():
            if self.signature.inputs[index].mutated:
                value = args[index]
                self.device.copy_(value, buffer[tuple(slice(0, length) for length in value.shape)])

    def _outputs(self, capture: Capture, size: int | None) -> Any:
        results = []
        for index, (spec, static) in enumerate(zip(self.signature.outputs, capture.outputs, strict=True)):
            if not spec.is_tensor:
                results.append(self.signature.output_sizes(index, size)[0] if spec.shape else spec.constant)
                continue
            sizes = self.signature.output_sizes(index, size)
            value = static if tuple(static.shape) == sizes else static[tuple(slice(0, n) for n in sizes)]
            results.append(value.clone() if self.config.output_mode == "clone" else value)
        return results if self.signature.output_is_sequence else results[0]

    def report(self) -> dict[str, Any]:
        """What this graph captured and what runs eagerly: sizes, graph memory per size, passes, fallbacks."""
        return graph_report(self)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


def _check_finite(spec: Any, value: torch.Tensor) -> None:
    """Debug mode: NaN/inf in a floating input is reported where it enters (otherwise it passes through and
    comes out as eager would give it)."""
    if not value.is_floating_point():
        return
    finite = torch.isfinite(value)
    if bool(finite.all()):
        return
    nans = int(torch.isnan(value).sum())
    rows = sorted({int(r) for r in (~finite).nonzero()[:, 0].tolist()})[:8] if value.dim() else []
    raise NonFiniteInputError(
        f"input {spec.index} ({spec.name}): {nans} NaN and {int((~finite).sum()) - nans} infinite values "
        f"(first rows {rows}); debug mode allows finite values only (without debug they pass through as in eager)"
    )


def ascend_graph_backend(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    options: dict[str, Any] | None = None,
    mode: str | None = None,
) -> Callable[..., Any]:
    """The dynamo backend registered as "ascend_graph" (entry point `torch_dynamo_backends`)."""
    if mode not in (None, "default"):
        raise ValueError(
            f"ascend_graph: torch.compile(mode={mode!r}) is not supported; pass options={{...}} instead "
            f"(allowed options: {list(GraphConfig.field_names())})"
        )
    config = GraphConfig.from_options(options)
    return GraphCompiled(gm, example_inputs, config)
