"""ascend_graph's own graph mode inside vllm-ascend's Model Runner V2 (Ascend NPUs) — the GPU lane's code, with the
NPU device's graph class and vllm-ascend's attention-parameter update.

UNVERIFIED: no Ascend NPU, CANN, torch_npu or vllm-ascend is in this project's reach; this module has never been
imported with them. It is written against vllm-ascend's main branch (182b75e, August 2026, which targets vLLM
0.27.1) and its names are checked against vllm-ascend's sources by the conformance test (docs/ascend-conformance.md).

vllm-ascend's V2 runner (`VLLM_USE_V2_MODEL_RUNNER=1`) replays FULL graphs through `ModelAclGraphManager`, a
subclass of vLLM's manager: after each replay the host relaunches every attention op of the graph on an update
stream with this step's sequence lengths (a graph task update) and records a per-layer event that the graph waits
on. Those per-size events and task handles are one set per process (`acl_graph._graph_params`), so an update may
rewrite a graph only after its previous replay has finished: vllm-ascend orders the update stream behind the whole
main stream (main branch) or synchronises the host before a replay (its V1 wrapper, `ACLGraphWrapper`).

Here forward-async keeps two static input sets (`ag_static_sets_for_async`; CUDA needs one, gpu_runner.py) and one
FULL graph per (size, set) — and each set has its own graph parameters (events, task handles, workspaces). The
update of step i writes the graphs of set i % 2 and waits, on the device, only for the last replay of that set
(step i - 2): it overlaps replay i - 1, with no host synchronisation before any replay. That is what
vllm-ascend's open PR #11915 attempts with double-buffered per-size events. PIECEWISE pieces stay with
vllm-ascend's ACLGraphWrapper, keyed per static set (npu_pieces.py: the runner names the set of each capture and
step).

decode_steps > 1 (mode "sync" or "forward-async"): `npu_burst.NpuBurstRunner`, first in the runner's MRO, runs
bursts of decode steps, each further step replaying the FULL graph with its own attention-parameter update
(`AscendGraphAclGraphs.run_fullgraph`); docs/multistep.md ("Ascend") says why a burst in flight and the host's writes
for the next scheduler step never meet.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.config import set_current_vllm_config
from vllm.forward_context import get_forward_context, set_forward_context
from vllm.v1.worker.gpu.cudagraph_utils import BatchExecutionDescriptor
from vllm_ascend.compilation import acl_graph
from vllm_ascend.worker.v2.aclgraph_utils import ModelAclGraphManager
from vllm_ascend.worker.v2.model_runner import NPUModelRunner
from vllm_ascend.worker.worker import NPUWorker

from .gpu_runner import CaptureLoop, StaticSetGraphs, StaticSetsRunner
from .npu_burst import NpuBurstRunner
from .options import options_of

HOST_WORKER = "vllm_ascend.worker.worker.NPUWorker"


class AscendGraphAclGraphs(StaticSetGraphs, ModelAclGraphManager, CaptureLoop):
    """vllm-ascend's FULL-graph manager with ascend_graph's capture step, static sets and per-set graph parameters."""

    def adopt(self, static_sets: int, device_kind: str, verify: bool = False) -> None:
        super().adopt(static_sets, device_kind, verify)
        self.ag_params: dict[int, Any] = {0: acl_graph.get_graph_params()}  # set 0: the one vllm-ascend made
        self.ag_replayed = [self.ag_device.new_event() for _ in range(static_sets)]

    def use_set(self, index: int) -> None:
        """The set's graph parameters become the ones vllm-ascend's attention reads (`get_graph_params()`), at
        capture (where its layers register their events and handles) and at every update."""
        super().use_set(index)
        if index not in self.ag_params:
            acl_graph._graph_params = None  # set_graph_params refuses to replace a set: a fresh one for this set
            acl_graph.set_graph_params(self.capture_sizes)
            self.ag_params[index] = acl_graph.get_graph_params()
        acl_graph._graph_params = self.ag_params[index]

    def run_fullgraph(self, desc: BatchExecutionDescriptor) -> Any:
        index = self.ag_set
        # The update below rewrites this set's graphs: once their last replay (two steps back) is done, not the
        # previous step's, which reads the other set. A device-side wait: the host never blocks here.
        self.model_runner.update_stream.wait_event(self.ag_replayed[index])
        outputs = self._replay(desc)
        self.ag_replayed[index].record(self.ag_device.current_stream())
        self._update_attention(desc)
        return outputs

    def _update_attention(self, desc: BatchExecutionDescriptor) -> None:
        """vllm-ascend's graph task update of every attention op in the graph, with this step's metadata."""
        runner = self.model_runner
        across_dp = torch.full([runner.dp_size], desc.num_tokens)
        with (
            set_current_vllm_config(self.vllm_config),
            set_forward_context(
                runner.model_state.attn_metadata,
                self.vllm_config,
                num_tokens=desc.num_tokens,
                cudagraph_runtime_mode=desc.cg_mode,
                num_tokens_across_dp=across_dp,
                batch_descriptor=None,
                slot_mapping=None,
            ),
        ):
            acl_graph.update_full_graph_params(
                _attention_backend(runner.attn_groups),
                runner.update_stream,  # the runner's (the manager's own copy exists on vllm-ascend main only)
                get_forward_context(),
                desc.num_tokens,
                self.vllm_config,
                runner.speculative_config,
            )


def _attention_backend(attn_groups: list[list[Any]]) -> Any:
    """The first attention backend with an implementation (the one whose ops the graph captured)."""
    for groups in attn_groups:
        for group in groups:
            if group.backend.get_impl_cls() is not None:
                return group.backend
    raise RuntimeError("ascend_graph: no attention backend with an implementation for the FULL-graph update")


class AscendGraphNPUModelRunner(NpuBurstRunner, StaticSetsRunner, NPUModelRunner):
    """vllm-ascend's V2 model runner with ascend_graph's graphs and bursts of decode steps (decode_steps > 1, with
    vLLM's async scheduling off or on: npu_burst.py), built by `AscendGraphNPUWorker`."""

    ag_manager_cls = AscendGraphAclGraphs
    ag_device_kind = "npu"
    ag_static_sets_for_async = 2  # the host writes what the graphs read (the attention-parameter update)


class AscendGraphNPUWorker(NPUWorker):
    def init_device(self) -> None:
        super().init_device()
        if not isinstance(self.model_runner, NPUModelRunner):  # the platform installs this worker only with V2
            raise ValueError(
                "ascend_graph's own graph mode on Ascend runs in vllm-ascend's Model Runner V2: set "
                "VLLM_USE_V2_MODEL_RUNNER=1, or additional_config.ascend_graph.graph_runner='vllm'"
            )
        self.model_runner.__class__ = AscendGraphNPUModelRunner  # re-classed, as on CUDA (gpu_worker.py)
        options = options_of(self.vllm_config)
        self.model_runner.setup_ascend_graph(options.mode, options.verify_requested)
        self.model_runner.setup_bursts(options.decode_steps)
