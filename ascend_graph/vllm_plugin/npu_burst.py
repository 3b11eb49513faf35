"""Bursts of decode steps on Ascend (decode_steps = K > 1): the CUDA lane's `gpu_burst.BurstRunner` over
vllm-ascend 0.23.0.post1's Model Runner V2 (`NPUModelRunner`), with what the NPU does differently.

UNVERIFIED on an NPU: no Ascend NPU, CANN, torch_npu or vllm-ascend is in this project's reach; this module has
never been imported with them. Its names and call signatures are checked against vllm-ascend 0.23.0.post1's sources
(docs/ascend-conformance.md) and its call order over stand-ins (tests/vllm_plugin/test_npu_burst.py), nothing more.
File:line below are vllm-ascend 0.23.0.post1 (`.cache/conformance/vllm-ascend-0.23.0.post1/vllm_ascend/`).

What differs from CUDA, and how a further step of a burst handles it:

- Host sequence lengths. vllm-ascend's attention metadata is built from the batch's host array `seq_lens_np`
  (`AscendModelState.prepare_attn`, worker/v2/model_states/default.py:35-77, into `build_attn_metadata`,
  worker/v2/attn_utils.py:94-128). vllm-ascend fills it per scheduler step from `num_computed_tokens`, copied to the
  host after every `postprocess_sampled` (worker/v2/model_runner.py:388-419) and waited for in
  `_update_seq_lens_cpu` (:421-439). Inside a burst of a decode batch every request grows by exactly one token per
  step, so a further step takes a copy of the previous step's array with one added to each request's entry
  (padding entries as the first step left them) and never waits for that copy. A fresh array per step: the
  metadata keeps views of it (`seq_lens_cpu[:num_reqs]`, attention/attention_v1.py:293-296), which that step's
  graph-task update reads. vllm-ascend's own device-to-host copy still runs after each step (its
  `postprocess_sampled`, on a side stream, no host wait): the last one is what the next scheduler step waits for.
- The graph-task update per replay. A FULL graph replays through `npu_runner.AscendGraphAclGraphs.run_fullgraph`,
  which after each replay updates the graph's attention parameters from `model_state.attn_metadata`, the metadata
  this step's `prepare_attn` just built: one update per step, issued by the host without waiting for the device
  (the update stream waits on the device for the previous replay of the same graph). K steps: K replays, K updates.
- `combine_sampled_and_draft_tokens` is called as vllm-ascend's `prepare_inputs` calls it (model_runner.py:299-309,
  nine arguments), not with vLLM 0.26's tenth: the vLLM under vllm-ascend is not the CUDA lane's.
- MLA/SFA rotary tables follow the positions (`update_cos_sin`, ops/rotary_embedding.py:129), as vllm-ascend does at
  the end of `prepare_inputs` (model_runner.py:364); `self.input_batch` is the step's batch, as vllm-ascend keeps it.
- A burst runs only on a decode-only batch (`AscendAttentionState.DecodeOnly`, attn_utils.py:185-206); any other
  attention state (a one-token prompt's first step is PrefillNoCache) runs one step, counted as a single step.

The stream and events of `BurstOutput` are `torch.cuda.*`, which vllm-ascend rebinds to `torch.npu.*` for the whole
process when its runner is built (`torch_cuda_wrapper`, worker/v2/utils.py:9-26, never restored), as vLLM's own V2
runner code relies on there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from vllm.logger import init_logger
from vllm.v1.worker.gpu.input_batch import combine_sampled_and_draft_tokens
from vllm_ascend.attention.attention_v1 import AscendAttentionState
from vllm_ascend.ops.rotary_embedding import update_cos_sin

from ..counters import Count, bump
from .gpu_burst import BurstRunner

logger = init_logger("vllm." + __name__)


class NpuBurstRunner(BurstRunner):
    """What bursts add to vllm-ascend's V2 NPUModelRunner (first in the MRO of npu_runner.AscendGraphNPUModelRunner):
    BurstRunner with the NPU's host sequence lengths; the per-replay update is the FULL-graph manager's."""

    # With vLLM's async scheduling (mode "forward-async"): every step's postprocess_sampled, the burst's further steps
    # included, is vllm-ascend's, which records `num_computed_tokens_event` after its copy of the device's counts
    # (worker/v2/model_runner.py:388-419); the next scheduler step's `_update_seq_lens_cpu` waits for that event
    # (`:421-439`) before it reads the counts, so it waits for the burst's last step and takes its counts. The same
    # wait makes the two static sets of forward-async enough: step N+1's preparation starts writing the set step N-1
    # used only once step N-1 (burst or not) has ended on the device. docs/multistep.md, "Ascend".
    bursts_with_async_scheduling = True

    @torch.inference_mode()
    def sample_tokens(self, grammar_output: Any) -> Any:
        state = self.execute_model_state  # type: ignore[attr-defined]
        if self.ag_burst is not None and state is not None:
            attn_state = state.input_batch.attn_state
            if attn_state != AscendAttentionState.DecodeOnly:
                self.ag_burst = None  # one step, vLLM's (vllm-ascend's) own sampling
                bump(Count.BURST_SINGLE_STEPS)
                reason = f"attention state {attn_state}"
                if reason not in self.ag_burst_logged:
                    self.ag_burst_logged.add(reason)
                    logger.info("ascend_graph: steps with %s run one decode step per round trip", reason)
        return super().sample_tokens(grammar_output)

    def _combine_tokens(self, previous: Any) -> torch.Tensor:
        buffers, states = self.input_buffers, self.req_states  # type: ignore[attr-defined]
        return combine_sampled_and_draft_tokens(
            buffers.input_ids,
            previous.idx_mapping,
            states.last_sampled_tokens,
            previous.query_start_loc,
            previous.seq_lens,
            states.prefill_len.gpu,
            states.draft_tokens,
            previous.cu_num_logits,
            previous.num_reqs,
        )

    def _further_batch(self, previous: Any, logits_indices: torch.Tensor) -> Any:
        seq_lens_np = previous.seq_lens_np.copy()  # the previous step's metadata keeps views of its own array
        seq_lens_np[: previous.num_reqs] += 1
        batch = super()._further_batch(previous, logits_indices)
        return dataclasses.replace(batch, seq_lens_np=seq_lens_np)

    def _forward(self, batch: Any, desc: Any) -> torch.Tensor:
        update_cos_sin(batch.positions)  # the positions prepare_pos_seq_lens just advanced
        self.input_batch = batch
        return super()._forward(batch, desc)
