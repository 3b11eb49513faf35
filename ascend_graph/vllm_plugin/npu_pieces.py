"""vllm-ascend's piece wrapper with one graph per (batch descriptor, static set) — for ascend_graph's runner on Ascend.

UNVERIFIED on an NPU (no Ascend NPU, CANN, torch_npu or vllm-ascend here); written against vllm-ascend 0.23.0.post1's
`vllm_ascend.compilation.acl_graph.ACLGraphWrapper` and checked by the conformance test, and over a stand-in in
tests/vllm_plugin/test_npu_pieces.py.

vllm-ascend's `ACLGraphWrapper` keeps its graphs in `concrete_aclgraph_entries`, keyed by the batch descriptor
alone; input addresses are checked only in its debug mode. Forward-async on Ascend captures the model once per static
set (npu_runner.py, gpu_runner.StaticSetsRunner): with that wrapper as it is, set 1's capture would find set 0's
graphs and replay them, so set 1's prefill and mixed steps would run on set 0's tokens. This subclass keeps one
table of entries per static set and, before each call, puts the table of the set the runner names
(`staging.static_set_in_use`) where vllm-ascend's code looks for it: capture, replay, weak references, its
stream-resource diagnostics and its host synchronisation all stay vllm-ascend's own. Outside ascend_graph's runner
the set is always 0: the wrapper behaves exactly as vllm-ascend's.
"""

from __future__ import annotations

from typing import Any

from vllm_ascend.compilation.acl_graph import ACLGraphWrapper

from ..errors import HostInterfaceError
from ..staging import static_set_in_use


class StaticSetACLGraphWrapper(ACLGraphWrapper):
    """ACLGraphWrapper with its entries per static set (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        entries = self.__dict__.get("concrete_aclgraph_entries")
        # None: renamed upstream. Set 0 alone (everything outside forward-async) still works as vllm-ascend's.
        self.ag_entries_per_set: dict[int, dict[Any, Any]] | None = {0: entries} if isinstance(entries, dict) else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        label = static_set_in_use()
        tables = self.ag_entries_per_set
        if tables is None:
            if label != 0:  # first seen in the start-up capture of set 1, before any request
                raise HostInterfaceError(
                    "ascend_graph: vllm-ascend's ACLGraphWrapper keeps no `concrete_aclgraph_entries` dict (written "
                    "against vllm-ascend 0.23.0.post1), so its pieces cannot be kept per static set and forward-async "
                    "would replay one set's graphs on the other's inputs. Use additional_config.ascend_graph.mode="
                    "'sync' or graph_runner='vllm' with this vllm-ascend"
                )
            return super().__call__(*args, **kwargs)
        entries = tables.get(label)
        if entries is None:
            entries = tables[label] = {}
        self.concrete_aclgraph_entries = entries  # the table vllm-ascend's __call__ captures into and replays from
        return super().__call__(*args, **kwargs)
