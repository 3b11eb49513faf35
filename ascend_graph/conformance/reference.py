"""The pinned torch_npu and vllm-ascend sources as one tree of names, the way they look once imported.

What torch_npu does at import time that a plain read of its files does not show, taken from its sources:
- `torch._register_device_module("npu", torch_npu.npu)` (`torch_npu/_init/registry/backend.py`): `torch.npu` is
  `torch_npu.npu`;
- `sys.modules["torchair"]` and `sys.modules["npugraph_ex"]` are lazy aliases of `torch_npu.dynamo.torchair` and
  `torch_npu.dynamo.npugraph_ex` (`torch_npu/dynamo/__init__.py`), which also import each other by those names;
- every `torch.ops.npu` operator becomes `torch_npu.<name>`, and a few Python objects are exported lazily
  (`torch_npu/_init/core/_exports.py`: `_export_npu_ops`, `_LAZY_PYTHON_SYMBOLS`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from .inherited import Callers
from .op_schemas import Op, read_op_schemas
from .source_index import Alias, SourceTree

ALIASES = {
    "torch.npu": "torch_npu.npu",
    "torchair": "torch_npu.dynamo.torchair",
    "npugraph_ex": "torch_npu.dynamo.npugraph_ex",
}
EXPORTS_FILE = "torch_npu/_init/core/_exports.py"


@dataclass
class Reference:
    tree: SourceTree
    ops: dict[str, Op]
    distributions: dict[str, str]  # normalised distribution name -> version
    label: str
    _callers: Callers | None = field(default=None, repr=False)

    def resolve(self, name: str) -> object:
        return self.tree.resolve(name)

    @property
    def callers(self) -> Callers:
        """The reference's own calls, by method name (read on first use: the whole tree's texts)."""
        if self._callers is None:
            self._callers = Callers(self.tree)
        return self._callers


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(metadata: Path) -> tuple[str, str]:
    fields = dict(
        line.split(": ", 1) for line in metadata.read_text(encoding="utf-8").splitlines()[:20] if ": " in line
    )
    return _normalise(fields["Name"]), fields["Version"]


def _lazy_symbols(torch_npu_root: Path) -> dict[str, Alias]:
    tree = ast.parse((torch_npu_root / EXPORTS_FILE).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_LAZY_PYTHON_SYMBOLS":
            table = ast.literal_eval(node.value)
            return {name: Alias(f"{module}.{attr}") for name, (module, attr) in table.items()}
    return {}


def load_reference(torch_npu_root: Path, vllm_ascend_root: Path) -> Reference:
    """The reference from the unpacked pins (see fetch.unpacked)."""
    torch_npu_dist = _distribution(next(torch_npu_root.glob("torch_npu-*.dist-info/METADATA")))
    vllm_ascend_dist = _distribution(vllm_ascend_root / "PKG-INFO")
    label = f"{torch_npu_dist[0]} {torch_npu_dist[1]} / {vllm_ascend_dist[0]} {vllm_ascend_dist[1]}"
    tree = SourceTree({"torch_npu": torch_npu_root, "vllm_ascend": vllm_ascend_root}, ALIASES, label=label)
    ops = read_op_schemas(torch_npu_root)
    tree.extra["torch_npu"] = {**_lazy_symbols(torch_npu_root), **ops}
    # The extra entries hold aliases too: resolve them lazily through the tree.
    for name, entry in list(tree.extra["torch_npu"].items()):
        if isinstance(entry, Alias):
            tree.extra["torch_npu"][name] = tree.resolve(entry.target)
    return Reference(tree, ops, dict([torch_npu_dist, vllm_ascend_dist]), label)
