"""How many static input sets ascend_graph's V2 runners keep, and that each set's graphs read that set (issue 24,
items 3-5), over stand-in hosts: vLLM's GPUModelRunner with its capture, step and wake-up replaced by small
functions, and vllm-ascend replaced by modules of stand-ins (test_npu_runner_order.py). Call order and bookkeeping
only: NOT CUDA or NPU coverage (the GPU lane's test_gpu_vllm.py runs the CUDA runner in vLLM; nothing runs on an NPU).

- CUDA: forward-async keeps one set, vLLM's own buffers, captured once (the device orders every write of them).
- Ascend: two sets, rotated per step; PIECEWISE pieces go through vllm-ascend's ACLGraphWrapper, which keys its
  graphs by batch descriptor alone: the platform's wrapper keeps them per (descriptor, set), so that set 1's steps
  replay the graph captured on set 1's inputs, not set 0's.
- After a KV-cache wake-up every set's block-table pointers are rebuilt from its own tables; Ascend refuses sleep
  mode with forward-async (vllm-ascend's worker does not report the wake-up to the runner).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")
torch = pytest.importorskip("torch")

from vllm.utils.import_utils import resolve_obj_by_qualname  # noqa: E402
from vllm.v1.worker.gpu.cudagraph_utils import ModelCudaGraphManager  # noqa: E402
from vllm.v1.worker.gpu.input_batch import InputBuffers  # noqa: E402
from vllm.v1.worker.gpu.model_runner import GPUModelRunner  # noqa: E402

from ascend_graph.device import get_device  # noqa: E402
from ascend_graph.staging import static_set_in_use  # noqa: E402
from ascend_graph.vllm_plugin.gpu_runner import StaticSetGraphs  # noqa: E402

from .test_npu_runner_order import Log, _stand_in_vllm_ascend  # noqa: E402

TOKENS = 4  # the batch size every step and capture uses here


class Tables:
    """Stands in for vLLM's BlockTables: the tables a step's graphs read, their pointers, the slot mappings."""

    def __init__(self) -> None:
        self.input_block_tables = [torch.zeros(4, 8, dtype=torch.int32)]
        self.input_block_table_ptrs = self._make_ptr_tensor(self.input_block_tables)
        self.slot_mappings = torch.zeros(1, 8, dtype=torch.int64)

    def _make_ptr_tensor(self, tables: list[torch.Tensor]) -> torch.Tensor:
        return torch.tensor([t.data_ptr() for t in tables], dtype=torch.uint64)


class PlainManager(StaticSetGraphs):
    """A FULL-graph manager with nothing of the host's: these tests are about the sets and the pieces."""


class Host:
    """What the stand-in host runner does in a capture, a step and a wake-up (installed on GPUModelRunner)."""

    def __init__(self, piece: Any = None) -> None:
        self.piece, self.captures, self.labels, self.outputs, self.pointers_right = piece, [], [], [], []

    def capture_model(self, runner: Any) -> int:
        self.captures.append(static_set_in_use())
        if self.piece is not None:
            self.piece(runner.input_buffers.input_ids[:TOKENS])  # the pieces capture on this set's input ids
        return 1

    def execute_model(self, runner: Any, tokens: torch.Tensor) -> None:
        runner.input_buffers.input_ids[:TOKENS] = tokens  # vLLM's input preparation writes the set in use
        tables = runner.block_tables
        expected = [table.data_ptr() for table in tables.input_block_tables]
        self.pointers_right.append(tables.input_block_table_ptrs.tolist() == expected)
        self.labels.append(static_set_in_use())
        if self.piece is not None:
            self.outputs.append(self.piece(runner.input_buffers.input_ids[:TOKENS]).clone())

    @staticmethod
    def post_kv_cache_wake_up(runner: Any) -> None:  # vLLM 0.26's: pointers of the tables installed now
        tables = runner.block_tables
        tables.input_block_table_ptrs = tables._make_ptr_tensor(tables.input_block_tables)


def _runner(cls: type, monkeypatch: pytest.MonkeyPatch, host: Host, manager_cls: type | None = None) -> Any:
    monkeypatch.setattr(GPUModelRunner, "initialize_kv_cache", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(GPUModelRunner, "capture_model", lambda self, *args, **kwargs: host.capture_model(self))
    monkeypatch.setattr(GPUModelRunner, "execute_model", lambda self, tokens, *a, **k: host.execute_model(self, tokens))
    wake_up = lambda self: host.post_kv_cache_wake_up(self)  # noqa: E731
    monkeypatch.setattr(GPUModelRunner, "post_kv_cache_wake_up", wake_up, raising=False)
    monkeypatch.setattr("ascend_graph.vllm_plugin.gpu_runner.get_device", lambda kind: get_device("cpu"))
    if manager_cls is not None:
        cls = type("Runner", (cls,), {"ag_manager_cls": manager_cls})
    runner = object.__new__(cls)
    runner.max_num_reqs, runner.max_num_tokens, runner.device = 4, 8, torch.device("cpu")
    runner.input_buffers = InputBuffers(max_num_reqs=4, max_num_tokens=8, device=torch.device("cpu"))
    runner.block_tables = Tables()
    runner.cudagraph_manager = object.__new__(ModelCudaGraphManager if manager_cls is None else manager_cls)
    runner.setup_ascend_graph("forward-async")
    runner.initialize_kv_cache(None)
    return runner


def test_cuda_forward_async_keeps_one_static_set_captured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 4: on CUDA the device orders every write of vLLM's buffers; a second set changed no ordering
    and doubled capture time and graph memory. One set: vLLM's own buffers, one capture, nothing rotates."""
    from ascend_graph.vllm_plugin.gpu_runner import AscendGraphGPUModelRunner

    host = Host()
    runner = _runner(AscendGraphGPUModelRunner, monkeypatch, host)
    own_buffers = runner.input_buffers
    assert runner.capture_model() == 1
    for step in range(3):
        runner.execute_model(torch.full((TOKENS,), step, dtype=torch.int32))
    assert host.captures == [0] and host.labels == [0, 0, 0]
    assert runner.input_buffers is own_buffers and len(runner.ag_sets) == 1
    assert runner.ascend_graph_report()["static_sets"] == 1


def _ascend(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, type]:
    """The stand-in vllm-ascend, its ACLGraphWrapper (keyed by descriptor alone, as vllm-ascend's: `__call__`
    captures a new descriptor on the inputs it is given and replays what it captured afterwards) and its
    platform; returns ascend_graph's npu_runner, platform_npu and the wrapper class the platform names."""
    acl_graph = _stand_in_vllm_ascend(monkeypatch, Log())

    class ACLGraphWrapper:
        def __init__(self, runnable: Any, vllm_config: Any, runtime_mode: Any, cudagraph_options: Any = None) -> None:
            self.runnable, self.concrete_aclgraph_entries = runnable, {}

        def __call__(self, *args: Any) -> Any:
            entry = self.concrete_aclgraph_entries.get(TOKENS)  # the batch descriptor
            if entry is None:
                self.concrete_aclgraph_entries[TOKENS] = args  # a graph bound to these inputs
                return self.runnable(*args)
            return self.runnable(*entry)  # a replay reads the inputs it was captured on

    acl_graph.ACLGraphWrapper = ACLGraphWrapper
    platform = types.ModuleType("vllm_ascend.platform")
    platform.NPUPlatform = type(
        "NPUPlatform",
        (),
        {"get_static_graph_wrapper_cls": classmethod(lambda cls: "vllm_ascend.compilation.acl_graph.ACLGraphWrapper")},
    )
    monkeypatch.setitem(sys.modules, "vllm_ascend.platform", platform)
    for name in ("npu_pieces", "platform_npu"):
        monkeypatch.delitem(sys.modules, f"ascend_graph.vllm_plugin.{name}", raising=False)
    npu_runner = importlib.import_module("ascend_graph.vllm_plugin.npu_runner")
    platform_npu = importlib.import_module("ascend_graph.vllm_plugin.platform_npu")
    wrapper_cls = resolve_obj_by_qualname(platform_npu.AscendGraphNpuPlatform.get_static_graph_wrapper_cls())
    return npu_runner, platform_npu, wrapper_cls


def test_ascend_pieces_of_each_static_set_read_that_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 3: forward-async on Ascend rotates two sets; with vllm-ascend's wrapper keyed by descriptor
    alone, set 1's capture found set 0's graph and its steps ran on set 0's tokens. The platform's wrapper keeps a
    graph per (descriptor, set): every step's piece reads that step's tokens."""
    npu_runner, _, wrapper_cls = _ascend(monkeypatch)
    piece = wrapper_cls(lambda ids: ids * 10, None, None)
    host = Host(piece)
    runner = _runner(npu_runner.AscendGraphNPUModelRunner, monkeypatch, host, PlainManager)
    runner.capture_model()
    steps = [torch.arange(TOKENS, dtype=torch.int32) + 100 * step for step in range(4)]
    for tokens in steps:
        runner.execute_model(tokens)
    for got, tokens in zip(host.outputs, steps, strict=True):
        assert torch.equal(got, tokens * 10)
    assert host.captures == [0, 1] and host.labels == [0, 1, 0, 1] and len(runner.ag_sets) == 2


def test_a_vllm_ascend_without_the_entries_table_refuses_a_second_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were vllm-ascend's table renamed, swapping the old name would change nothing and set 1 would replay set 0's
    graphs: set 0 (everything but forward-async) still runs as vllm-ascend's wrapper; the capture of set 1, at
    start-up, raises naming the way out."""
    from ascend_graph.errors import HostInterfaceError
    from ascend_graph.staging import using_static_set

    _, _, wrapper_cls = _ascend(monkeypatch)
    host_init = wrapper_cls.__mro__[1].__init__

    def renamed(self: Any, *args: Any) -> None:
        host_init(self, *args)
        self.entries = self.__dict__.pop("concrete_aclgraph_entries")

    monkeypatch.setattr(wrapper_cls.__mro__[1], "__init__", renamed)
    monkeypatch.setattr(wrapper_cls.__mro__[1], "__call__", lambda self, ids: ids + 1)
    piece = wrapper_cls(lambda ids: ids, None, None)
    assert torch.equal(piece(torch.zeros(2)), torch.ones(2))
    with using_static_set(1), pytest.raises(HostInterfaceError, match=r"concrete_aclgraph_entries.*mode='sync'"):
        piece(torch.zeros(2))


def test_after_a_kv_cache_wake_up_every_set_points_at_its_own_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 5 (sleep mode): the sets made with the KV cache come back undefined after a wake-up, and the
    pointer tensors saved before it are stale. After the host's wake-up hook each set's pointers are rebuilt from
    its own tables, so that the set installed at every later step points at its tables."""
    npu_runner, _, _ = _ascend(monkeypatch)
    host = Host()
    runner = _runner(npu_runner.AscendGraphNPUModelRunner, monkeypatch, host, PlainManager)
    runner.capture_model()
    runner.execute_model(torch.ones(TOKENS, dtype=torch.int32))
    for static_set in runner.ag_sets:  # what sleep leaves: undefined memory where pointers were
        static_set.input_block_table_ptrs.fill_(12345)
    runner.ag_sets[1].input_block_tables[0].fill_(-7)
    runner.post_kv_cache_wake_up()
    host.pointers_right.clear()
    for step in range(3):
        runner.execute_model(torch.full((TOKENS,), step, dtype=torch.int32))
    assert host.pointers_right == [True, True, True]
    assert int(runner.ag_sets[1].input_block_tables[0].abs().sum()) == 0  # as made


def test_ascend_refuses_sleep_mode_with_forward_async(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """vllm-ascend's worker does not tell the runner about a wake-up: forward-async with sleep mode is refused at
    start-up, naming the settings; sync mode with sleep mode is not."""
    from vllm.engine.arg_utils import EngineArgs

    from ascend_graph.models.tiny_hf import build_tiny_model_dir

    _, platform_npu, _ = _ascend(monkeypatch)
    host_platform = sys.modules["vllm_ascend.platform"].NPUPlatform
    host_platform.check_and_update_config = classmethod(lambda cls, config: None)
    host_platform.get_compile_backend = classmethod(lambda cls: "host.Compiler")
    model = build_tiny_model_dir(tmp_path / "tiny")
    config = EngineArgs(model=str(model), max_model_len=64).create_engine_config()
    monkeypatch.setattr(type(config), "use_v2_model_runner", property(lambda self: True))  # vllm-ascend's V2
    config.parallel_config.worker_cls = "auto"
    config.model_config.enable_sleep_mode = True
    # as an Ascend host leaves the config (the CPU platform active here turned graphs and async scheduling off)
    from vllm.config import CompilationMode, CUDAGraphMode

    config.compilation_config.mode = CompilationMode.VLLM_COMPILE
    config.compilation_config.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
    config.scheduler_config.async_scheduling = True
    config.additional_config = {"ascend_graph": {"mode": "forward-async"}}
    with pytest.raises(ValueError, match=r"'forward-async' on Ascend cannot be combined with sleep mode"):
        platform_npu.AscendGraphNpuPlatform.check_and_update_config(config)
    config.scheduler_config.async_scheduling = False  # mode 'sync' comes with vLLM's async scheduling off
    config.additional_config = {"ascend_graph": {"mode": "sync"}}
    platform_npu.AscendGraphNpuPlatform.check_and_update_config(config)
    assert config.parallel_config.worker_cls == platform_npu.WORKER
