"""The Ascend conformance check: ascend_graph's calls into torch_npu and vllm-ascend, checked against their sources.

No NPU is in reach, and torch_npu cannot be imported without CANN; what can be checked is that every name
ascend_graph uses there exists with a signature its calls fit. `pins.py` names the sources (torch-npu 2.11.0's
wheel, vllm-ascend 0.23.0.post1's sdist), `fetch.py` brings them, `source_index.py` and `op_schemas.py` read them
without importing them, `uses.py` gathers what the project uses from its own sources, `check.py` compares.
`python -m ascend_graph.conformance` prints the table of checked names; `fetch` downloads.
"""

from __future__ import annotations
