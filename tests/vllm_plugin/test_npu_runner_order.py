"""The Ascend FULL-graph manager's ordering, over stand-ins for vllm-ascend and the NPU device: call order only, NOT
NPU coverage (no NPU, CANN, torch_npu or vllm-ascend here; docs/ascend-conformance.md checks the names).

What it pins down: with two static sets, the attention-parameter update of step i waits (on the device) for the
event recorded after the last replay of its own set — step i - 2 — not for step i - 1's replay, which reads the
other set's graphs and parameters; every update sees its set's graph parameters; nothing synchronises the host.
"""

from __future__ import annotations

import enum
import importlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from vllm.config.compilation import CUDAGraphMode  # noqa: E402
from vllm.v1.worker.gpu.cudagraph_utils import BatchExecutionDescriptor, ModelCudaGraphManager  # noqa: E402
from vllm.v1.worker.gpu.model_runner import GPUModelRunner  # noqa: E402
from vllm.v1.worker.gpu_worker import Worker  # noqa: E402

FULL_2 = BatchExecutionDescriptor(CUDAGraphMode.FULL, num_tokens=2, num_reqs=2, uniform_token_count=1)


class Log(list):
    def add(self, *entry: Any) -> None:
        self.append(entry)


class FakeEvent:
    def __init__(self, log: Log, name: str) -> None:
        self.log, self.name = log, name

    def record(self, stream: Any = None) -> None:
        self.log.add("record", self.name)


class FakeDevice:
    kind = "npu"

    def __init__(self, log: Log) -> None:
        self.log, self.events = log, 0

    def new_event(self, timing: bool = False) -> FakeEvent:
        self.events += 1
        return FakeEvent(self.log, f"replayed{self.events - 1}")

    def current_stream(self) -> str:
        return "main"

    def synchronize(self) -> None:
        raise AssertionError("the host must not synchronise before a replay")


class FakeUpdateStream:
    def __init__(self, log: Log) -> None:
        self.log = log

    def wait_event(self, event: FakeEvent) -> None:
        self.log.add("update waits", event.name)


class FakeGraph:
    def __init__(self, log: Log, name: str) -> None:
        self.log, self.name = log, name

    def replay(self) -> None:
        self.log.add("replay", self.name)


def _stand_in_vllm_ascend(monkeypatch: pytest.MonkeyPatch, log: Log) -> types.ModuleType:
    acl_graph = types.ModuleType("vllm_ascend.compilation.acl_graph")
    acl_graph._graph_params = None
    made = iter(range(10))

    def set_graph_params(sizes: list[int]) -> None:
        if acl_graph._graph_params is not None:
            raise ValueError("Graph parameters have already been set!")  # as vllm-ascend's does
        acl_graph._graph_params = f"params{next(made)}"

    acl_graph.set_graph_params = set_graph_params
    acl_graph.get_graph_params = lambda: acl_graph._graph_params
    acl_graph.update_full_graph_params = lambda backend, stream, context, num_tokens, *rest: log.add(
        "update", acl_graph._graph_params, num_tokens
    )
    modules = {
        "vllm_ascend": types.ModuleType("vllm_ascend"),
        "vllm_ascend.compilation": types.ModuleType("vllm_ascend.compilation"),
        "vllm_ascend.compilation.acl_graph": acl_graph,
        "vllm_ascend.worker": types.ModuleType("vllm_ascend.worker"),
        "vllm_ascend.worker.v2": types.ModuleType("vllm_ascend.worker.v2"),
        "vllm_ascend.worker.v2.aclgraph_utils": types.ModuleType("aclgraph_utils"),
        "vllm_ascend.worker.v2.model_runner": types.ModuleType("model_runner"),
        "vllm_ascend.worker.worker": types.ModuleType("worker"),
        "vllm_ascend.attention": types.ModuleType("vllm_ascend.attention"),
        "vllm_ascend.attention.attention_v1": types.ModuleType("attention_v1"),
        "vllm_ascend.ops": types.ModuleType("vllm_ascend.ops"),
        "vllm_ascend.ops.rotary_embedding": types.ModuleType("rotary_embedding"),
    }
    modules["vllm_ascend.attention.attention_v1"].AscendAttentionState = enum.Enum(
        "AscendAttentionState", ["PrefillNoCache", "PrefillCacheHit", "DecodeOnly", "ChunkedPrefill", "SpecDecoding"]
    )
    modules["vllm_ascend.ops.rotary_embedding"].update_cos_sin = lambda positions: log.add(
        "cos_sin", positions.tolist()
    )
    modules["vllm_ascend.compilation"].acl_graph = acl_graph
    modules["vllm_ascend.worker.v2.aclgraph_utils"].ModelAclGraphManager = type(
        "ModelAclGraphManager", (ModelCudaGraphManager,), {}
    )
    modules["vllm_ascend.worker.v2.model_runner"].NPUModelRunner = type("NPUModelRunner", (GPUModelRunner,), {})
    modules["vllm_ascend.worker.worker"].NPUWorker = type("NPUWorker", (Worker,), {})
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in ("npu_runner", "npu_burst"):
        monkeypatch.delitem(sys.modules, f"ascend_graph.vllm_plugin.{name}", raising=False)
    return acl_graph


def test_each_update_waits_for_its_own_sets_last_replay_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vllm.engine.arg_utils import EngineArgs

    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    log = Log()
    acl_graph = _stand_in_vllm_ascend(monkeypatch, log)
    npu_runner = importlib.import_module("ascend_graph.vllm_plugin.npu_runner")
    monkeypatch.setattr("ascend_graph.vllm_plugin.gpu_runner.get_device", lambda kind: FakeDevice(log))

    manager = object.__new__(npu_runner.AscendGraphAclGraphs)
    acl_graph.set_graph_params([2])  # what ModelAclGraphManager.__init__ does: set 0's parameters
    manager.capture_sizes = [2]
    model = build_tiny_model_dir(tmp_path / "tiny")
    manager.vllm_config = EngineArgs(model=str(model), max_model_len=64).create_engine_config()
    backend = types.SimpleNamespace(get_impl_cls=lambda: object)
    manager.model_runner = types.SimpleNamespace(
        update_stream=FakeUpdateStream(log),
        dp_size=1,
        model_state=types.SimpleNamespace(attn_metadata={}),
        attn_groups=[[types.SimpleNamespace(backend=backend)]],
        speculative_config=None,
    )
    manager.is_last_pp_rank, manager.use_aux_hidden_state_outputs = True, False
    manager.hidden_states = torch.zeros(4, 8)
    manager.adopt(2, "npu")
    for index in (0, 1):  # the runner's capture_model: each set's graphs with that set's parameters
        manager.use_set(index)
        manager.ag_graphs[(FULL_2, index)] = types.SimpleNamespace(graph=FakeGraph(log, f"graph{index}"))
    assert manager.ag_params == {0: "params0", 1: "params1"}

    log.clear()
    for step in range(3):
        manager.use_set(step % 2)  # the runner's execute_model rotates the sets
        out = manager.run_fullgraph(FULL_2)
        assert out.shape == (2, 8)
    assert log == [
        ("update waits", "replayed0"),  # nothing recorded yet: no wait on the device
        ("replay", "graph0"),
        ("record", "replayed0"),
        ("update", "params0", 2),
        ("update waits", "replayed1"),  # not replayed0: step 1's update overlaps step 0's replay
        ("replay", "graph1"),
        ("record", "replayed1"),
        ("update", "params1", 2),
        ("update waits", "replayed0"),  # step 2 rewrites set 0's graph: after step 0's replay, recorded above
        ("replay", "graph0"),
        ("record", "replayed0"),
        ("update", "params0", 2),
    ]
