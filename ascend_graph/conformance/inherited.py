"""What a project class takes from the reference class it extends, beyond the methods it overrides.

- `self.x` in the project class (or a mixin before the base) where no project class defines `x`: an attribute or
  a method of the reference base (`self.input_buffers`, `self._bookkeeping_sync(...)`), checked to exist there
  (assigned by its source, or inherited) and, called, to fit its signature and its result's tuple arity;
- the reference's own callers of a method the project overrides: the override must accept every call they make
  (vLLM 0.32's worker calls `model_runner.initialize_kv_cache(config, kv_cache_allocation_context=...)`, its
  CUDA-graph memory profiling `runner.initialize_kv_cache(config, is_profiling=True)`), not only the base's
  signature. Callers are found by the method's name on receivers that name an instance of the base (`self` in
  the base's own classes, and the names in CALLER_NAMES), over every module of the reference.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .source_index import Function, Klass, SourceTree, dotted
from .uses import Use, result_use

# The names under which the reference's code holds an instance of a base class the project extends (read from
# vLLM: `self.model_runner = ...` in its workers, `runner` in cudagraph_utils.py, `current_platform`...).
CALLER_NAMES = {
    "GPUModelRunner": ("model_runner", "runner"),
    "CPUModelRunner": ("model_runner", "runner"),
    "NPUModelRunner": ("model_runner", "runner"),
    "Worker": ("worker", "driver_worker"),
    "CPUWorker": ("worker", "driver_worker"),
    "NPUWorker": ("worker", "driver_worker"),
    "CudaPlatform": ("current_platform",),
    "CpuPlatform": ("current_platform",),
    "NPUPlatform": ("current_platform",),
    "CompilerInterface": ("compiler",),
    "ModelCudaGraphManager": ("cudagraph_manager",),  # CudaGraphManager's callers: ModelCudaGraphManager's super()
}
MAX_CHAIN = 2  # self.a.b: far enough to reach a nested vLLM object's attribute (self.block_tables.slot_mappings)


def own_names(project: SourceTree, project_class: Klass, everything: list[Klass]) -> tuple[set[str], set[str]]:
    """Names that project classes define (methods, class attributes) and assign, in `project_class`'s MRO and in
    the MRO of every project class built on it (CaptureLoop's `self._outputs` is StaticSetGraphs', its sibling in
    AscendGraphCudaGraphs)."""
    defined, assigned = set(), set()
    lineages = [project.mro(k) for k in everything]
    for lineage in [project.mro(project_class), *[m for m in lineages if project_class in m]]:
        for klass in lineage:
            if isinstance(klass, Klass) and klass.qualname.startswith("ascend_graph"):
                defined |= set(klass.members)
                assigned |= set(klass.instance_attrs)
    return defined, assigned


def self_uses(project: SourceTree, classes: list[Klass], base_path: str, defined: set[str]) -> Iterator[Use]:
    """`self.x...` in `classes` where `x` is not a project member: uses of `base_path().x...`."""
    for klass in classes:
        parents = {child: parent for parent in ast.walk(klass.node) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(klass.node):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"):
                continue
            if node.attr in defined or node.attr.startswith("__"):
                continue
            chain, last = [node.attr], node
            while len(chain) < MAX_CHAIN and _plain_attribute(parents.get(last)):
                last = parents[last]
                chain.append(last.attr)
            where = f"{project.relpath(klass.module.path)}:{node.lineno} ({klass.node.name})"
            path = f"{base_path}()." + ".".join(chain)
            call = parents.get(last)
            if isinstance(call, ast.Call) and call.func is last:
                keywords = tuple(k.arg for k in call.keywords if k.arg is not None)
                star = any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)
                positional = sum(1 for a in call.args if not isinstance(a, ast.Starred))
                yield Use("call", path, where, positional, keywords, star, result_use(parents, call))
            else:
                yield Use("attribute", path, where)


def _plain_attribute(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Attribute) and not node.attr.startswith("__")


def tuple_arities(function: Function) -> set[int] | None:
    """How many values the function's `return a, b, ...` statements give; None when a return is not a literal
    tuple (its arity is not in the source) or there is none."""
    arities = set()
    nested = {id(n) for inner in ast.walk(function.node) if inner is not function.node for n in _defs(inner)}
    for node in ast.walk(function.node):
        if not isinstance(node, ast.Return) or id(node) in nested or node.value is None:
            continue
        if not isinstance(node.value, ast.Tuple) or any(isinstance(e, ast.Starred) for e in node.value.elts):
            return None
        arities.add(len(node.value.elts))
    return arities or None


def _defs(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        yield from ast.walk(node)


@dataclass(frozen=True)
class CallerCall:
    where: str
    positional: int
    keywords: tuple[str, ...]
    star: bool

    def text(self) -> str:
        args = ["_"] * self.positional + [f"{k}=_" for k in self.keywords] + (["*..."] if self.star else [])
        return f"({', '.join(args)})"


class Callers:
    """The calls `receiver.name(...)` in every module of one reference tree, found by name (texts read once)."""

    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree
        self._texts: dict[Path, str] | None = None
        self._parsed: dict[Path, ast.Module] = {}

    def texts(self) -> dict[Path, str]:
        if self._texts is None:
            self._texts = {}
            for package, root in self.tree.packages.items():
                for path in sorted((root / package).rglob("*.py")):
                    self._texts[path] = path.read_text(encoding="utf-8", errors="replace")
        return self._texts

    def of(self, base: Klass, name: str) -> list[CallerCall]:
        """Calls of method `name` on an instance of `base` (or one of its reference subclasses' `self`)."""
        lineage = {k.qualname for k in self.tree.mro(base) if isinstance(k, Klass)}
        receivers = {r for cls in lineage for r in CALLER_NAMES.get(cls.rpartition(".")[2], ())}
        # A text search first: only files with `<receiver>.name(` are parsed (vLLM has ~2,000 modules).
        homes = {self.tree.file_of(q.rpartition(".")[0]) for q in lineage}
        homes = {home[0] for home in homes if home is not None}
        named = re.compile(rf"\b({'|'.join(map(re.escape, receivers | {'super()'}))})\.{re.escape(name)}\(")
        found = []
        for path, text in self.texts().items():
            if f".{name}(" not in text or not (named.search(text) or (path in homes and f"self.{name}(" in text)):
                continue
            if path not in self._parsed:
                self._parsed[path] = ast.parse(text)
            module = self.tree.relpath(path).removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            for klass, call in _calls_named(self._parsed[path], name):
                receiver = dotted(call.func.value) or ""
                own = klass is not None and f"{module}.{klass.name}" in lineage
                if (
                    receiver.rpartition(".")[2] in receivers
                    or (receiver == "self" and own)
                    or self._super_of(call, klass, base, module)
                ):
                    keywords = tuple(k.arg for k in call.keywords if k.arg is not None)
                    star = any(isinstance(a, ast.Starred) for a in call.args)
                    star = star or any(k.arg is None for k in call.keywords)
                    positional = sum(1 for a in call.args if not isinstance(a, ast.Starred))
                    found.append(CallerCall(f"{self.tree.relpath(path)}:{call.lineno}", positional, keywords, star))
        return found

    def _super_of(self, call: ast.Call, klass: ast.ClassDef | None, base: Klass, module_name: str) -> bool:
        """`super().name(...)` in a class that has `base` among its bases (vLLM's subclasses of it)."""
        inner = call.func.value
        module = self.tree.module(module_name)
        if klass is None or module is None or not (isinstance(inner, ast.Call) and dotted(inner.func) == "super"):
            return False
        return any(self.tree.absolute(module, dotted(b) or "") == base.qualname for b in klass.bases)


def _calls_named(module: ast.Module, name: str) -> Iterator[tuple[ast.ClassDef | None, ast.Call]]:
    """(enclosing class or None, call) for each `x.name(...)` in the module."""
    stack: list[tuple[ast.ClassDef | None, ast.AST]] = [(None, module)]
    while stack:
        klass_name, node = stack.pop()
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.ClassDef) else klass_name
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr == name:
                yield klass_name, child
            stack.append((inner, child))


def caller_problems(signature: inspect.Signature, calls: list[CallerCall]) -> list[str]:
    """The reference's calls that the override's (bound) signature does not accept."""
    problems = []
    for call in calls:
        args, kwargs = [None] * call.positional, {k: None for k in call.keywords}
        try:
            (signature.bind_partial if call.star else signature.bind)(*args, **kwargs)
        except TypeError as error:
            problems.append(f"called as {call.text()} at {call.where}; the override {signature} rejects it: {error}")
    return problems
