"""The signatures of torch_npu's operators (`torch_npu.npu_*`), read from the wheel without importing it.

At import time torch_npu copies every operator of `torch.ops.npu` onto the `torch_npu` module
(`torch_npu/_init/core/_exports.py`), so `torch_npu.npu_rms_norm` is the operator overload packet whose schemas
the wheel registers from `torch_npu/csrc/aten/npu_native_functions*.yaml` (the `custom` and `autograd` sections;
the other sections re-implement ATen operators). Those schema strings are parsed with torch's own schema parser,
which gives argument names, order, keyword-only markers, defaults and the number of returned tensors.

`torch_npu/_op_plugin_docs.py` documents about 200 of them (`_add_torch_npu_docstr(name, "torch_npu.name(...)
-> ...")`); where a documented signature disagrees with the registered schema the table says so, and where an
operator is not documented it says that too. The registered schema decides.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .source_index import SourceDefault

SCHEMA_FILES = (
    "torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml",
    "torch_npu/csrc/aten/npu_native_functions.yaml",
)
OP_SECTIONS = ("custom", "autograd")
DOCS_FILE = "torch_npu/_op_plugin_docs.py"

_SECTION = re.compile(r"^([A-Za-z_]\w*):\s*$")
_FUNC = re.compile(r"^\s*(?:-\s+)?func:\s*(.+?)\s*$")


@dataclass
class Overload:
    schema: str
    where: str

    def parsed(self) -> torch._C.FunctionSchema:
        return torch._C.parse_schema(self.schema)

    def signature(self) -> inspect.Signature:
        params = []
        for arg in self.parsed().arguments:
            kind = inspect.Parameter.KEYWORD_ONLY if arg.kwarg_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
            if arg.has_default_value():
                params.append(inspect.Parameter(arg.name, kind, default=SourceDefault(repr(arg.default_value))))
            else:
                params.append(inspect.Parameter(arg.name, kind))
        return inspect.Signature(params)

    def returns(self) -> int:
        return len(self.parsed().returns)


@dataclass
class Op:
    """One `torch_npu.<name>` operator packet: every registered overload, and its documented line if any."""

    qualname: str
    overloads: list[Overload] = field(default_factory=list)
    documented: str | None = None  # the signature line of _op_plugin_docs.py
    documented_where: str | None = None

    @property
    def where(self) -> str:
        return self.overloads[0].where

    def doc_agrees(self) -> bool | None:
        """Whether the documented argument names match one overload's (None: undocumented or unparsable)."""
        if self.documented is None:
            return None
        names = _documented_names(self.documented)
        if names is None:
            return None
        return any(names == [p for p in o.signature().parameters] for o in self.overloads)


def read_op_schemas(root: Path) -> dict[str, Op]:
    """`torch_npu.<name>` -> Op, from the wheel's schema files under `root` (the unpacked wheel)."""
    ops: dict[str, Op] = {}
    for relative in SCHEMA_FILES:
        path = root / relative
        section = None
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            heading = _SECTION.match(line)
            if heading:
                section = heading.group(1)
                continue
            match = _FUNC.match(line)
            if match is None or section not in OP_SECTIONS:
                continue
            schema = match.group(1)
            name = schema.split("(")[0].split(".")[0]
            op = ops.setdefault(name, Op(f"torch_npu.{name}"))
            op.overloads.append(Overload(schema, f"{relative}:{number}"))
    _attach_docs(root, ops)
    return ops


def _attach_docs(root: Path, ops: dict[str, Op]) -> None:
    path = root / DOCS_FILE
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_add_torch_npu_docstr"):
            continue
        if len(node.args) != 2 or not all(isinstance(arg, ast.Constant) for arg in node.args):
            continue
        name, text = node.args[0].value, node.args[1].value
        line = next((ln.strip() for ln in str(text).splitlines() if "(" in ln and name in ln), None)
        if name in ops and line is not None:
            ops[name].documented = line
            ops[name].documented_where = f"{DOCS_FILE}:{node.lineno}"


def _documented_names(line: str) -> list[str] | None:
    """Argument names of a documented line such as `torch_npu.f(Tensor self, float eps=1e-6) -> Tensor`."""
    head = line.split("->")[0].strip()
    inner = head[head.find("(") + 1 : head.rfind(")")]
    names = []
    for part in inner.split(","):
        part = part.split("=")[0].strip()
        if not part or part == "*":
            continue
        names.append(part.split()[-1])
    return names or None
