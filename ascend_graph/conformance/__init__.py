"""The conformance checks: ascend_graph's calls into torch_npu, vllm-ascend and vLLM, checked against their sources.

No NPU is in reach, torch_npu cannot be imported without CANN, and only one vLLM is installed per lane; what can be
checked is that every name ascend_graph uses there exists with a signature its calls fit. `pins.py` names the
sources (torch-npu 2.11.0 and 2.14.0 wheels, vllm-ascend 0.23.0.post1's sdist, vLLM 0.26.0/0.32.0/0.33.0/0.34.0
sdists), `fetch.py` brings them, `source_index.py` and `op_schemas.py` read them without importing them, `uses.py`
gathers what the project uses from its own sources, `check.py` and `inherited.py` compare, `vllm_target.py` runs
the comparison per vLLM version and lane. `python -m ascend_graph.conformance` prints the Ascend table,
`... vllm` the vLLM one; `fetch` downloads.
"""

from __future__ import annotations
