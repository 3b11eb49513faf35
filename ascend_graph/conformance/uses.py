"""What ascend_graph uses of torch_npu, torch.npu, torchair, npugraph_ex and vllm_ascend, read from its own sources.

Every module of ascend_graph/, kernels/ and passes/ is walked with `ast`, so a call added tomorrow is checked
without anyone listing it. A use is a dotted path as the reference would see it, with `()` where a call's result
is used (`torch.npu.NPUGraph().replay`: the method of an instance). Names reach the tracked roots through:

- imports, at module level or inside a function (`import torch_npu`, `from vllm_ascend.platform import X`);
- local variables assigned a tracked value (`npu = _npu()`, `config = torchair.CompilerConfig()`);
- project functions whose every `return` gives the same tracked value (`_npu()` returns `torch.npu`);
- annotations: a parameter or a class field annotated `torch.npu.NPUGraph` is an instance of it, so
  `self.graph.replay()` in a dataclass with `graph: torch.npu.NPUGraph` is a use of `NPUGraph.replay`; a class
  field annotated `Annotated[ModuleType, "torch.npu"]` is that value itself (the device module chosen at run
  time: `self.api.Stream()` is a call of `torch.npu.Stream`);
- `super().name(...)` in a class whose bases lead to a tracked class: a call of that class's method.

Kinds of use: "import", "name" (exists), "call" (with positional count, keyword names and how the result is
used: unpacked into n names, indexed, or used whole), "option" (an attribute set on an instance: a compiler
config option and its literal value), "subclass" (a project class extends a tracked class: its overrides are
checked), "string" (a literal dotted path such as a qualified class name), "module" (a literal module name given
to `find_spec`/`import_module`), "distribution" (a literal distribution name whose version is read).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .source_index import Function, Klass, SourceTree, dotted

VERSION_READERS = ("version", "_version", "_installed")
MODULE_FINDERS = ("find_spec", "import_module")


@dataclass(frozen=True)
class Roots:
    """What one check tracks: the top-level names (`torch_npu`, `vllm`...) and the words that make a literal
    string given to `find_spec` or a version reader one of its module or distribution names."""

    names: tuple[str, ...]
    words: re.Pattern[str]

    def tracked(self, path: str) -> bool:
        return any(path == root or path.startswith(root + ".") for root in self.names)

    def dotted_string(self, text: str) -> bool:
        """A literal naming a tracked object by its qualified name (`"vllm_ascend.platform.NPUPlatform"`)."""
        parts = text.split(".")
        return self.tracked(text) and text not in self.names and all(part.isidentifier() for part in parts)


ASCEND_ROOTS = Roots(
    ("torch_npu", "torch.npu", "torchair", "npugraph_ex", "vllm_ascend"),
    re.compile(r"npu|ascend|torchair|npugraph", re.IGNORECASE),
)
VLLM_ROOTS = Roots(("vllm",), re.compile(r"^vllm(\.\w+)*$"))  # not "vllm-cpu": that is the lane, not vLLM's name
TRACKED_ROOTS = ASCEND_ROOTS.names


def tracked(path: str) -> bool:
    """Tracked by the Ascend check (the default of every function here)."""
    return ASCEND_ROOTS.tracked(path)


@dataclass
class Use:
    kind: str
    path: str
    where: str
    positional: int = 0
    keywords: tuple[str, ...] = ()
    star: bool = False  # the call passes *args or **kwargs
    result: tuple[str, int] | None = None  # ("unpack", n), ("index", i), ("whole", 0), ("kept", 0)
    value: object = None  # option: (name, literal or NO_LITERAL); subclass: the project class
    note: str = ""


NO_LITERAL = object()


def project_tree(root: Path) -> SourceTree:
    """ascend_graph's own sources, with passes/ and kernels/ under their installed names."""
    return SourceTree(
        {"ascend_graph": root, "kernels": root, "passes": root},
        aliases={"ascend_graph.kernels": "kernels", "ascend_graph.passes": "passes"},
        label="ascend_graph",
    )


PROJECT_FOLDERS = (
    ("ascend_graph", "ascend_graph"),
    ("kernels", "ascend_graph.kernels"),
    ("passes", "ascend_graph.passes"),
)
NOT_GATHERED = ("ascend_graph.conformance",)  # the check itself: it names the reference, it does not use it
OWN_DISTRIBUTION = "ascend-graph"


def project_modules(root: Path) -> Iterator[str]:
    for folder, package in PROJECT_FOLDERS:
        if not (root / folder).is_dir():
            continue
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if not name.startswith(NOT_GATHERED):
                yield name


def gather_uses(root: Path, roots: Roots = ASCEND_ROOTS) -> list[Use]:
    """Every use of a name under `roots` in the project under `root`."""
    tree = project_tree(root)
    modules = [m for m in (tree.module(name) for name in project_modules(root)) if m is not None]
    returns = protocol_returns(tree, modules)
    uses: list[Use] = []
    for module in modules:
        uses.extend(ModuleWalker(tree, module, returns, roots).walk())
    return uses


def annotated_as(node: ast.expr, roots: Roots = ASCEND_ROOTS) -> str | None:
    """The tracked path named by the metadata of `Annotated[T, "torch.npu"]`, else None."""
    if not (isinstance(node, ast.Subscript) and dotted(node.value) in ("Annotated", "typing.Annotated")):
        return None
    metadata = node.slice.elts[1:] if isinstance(node.slice, ast.Tuple) else []
    named = [
        m.value for m in metadata if isinstance(m, ast.Constant) and isinstance(m.value, str) and roots.tracked(m.value)
    ]
    return named[0] if named else None


def _is_protocol(klass: object) -> bool:
    return isinstance(klass, Klass) and any(dotted(b) in ("Protocol", "typing.Protocol") for b in klass.node.bases)


def protocol_returns(tree: SourceTree, modules: list[object]) -> dict[str, str]:
    """Method name -> the project Protocol its Protocol declaration returns (`GraphDevice.new_stream -> Stream`):
    a device method annotated to return a tracked class is checked against that Protocol."""
    returns = {}
    for module in modules:
        for klass in module.bindings.values():
            if not _is_protocol(klass) or klass.module is not module:
                continue
            for name, member in klass.members.items():
                annotation = (
                    dotted(member.node.returns) if isinstance(member, Function) and member.node.returns else None
                )
                if annotation is not None and _is_protocol(tree.resolve(tree.absolute(module, annotation))):
                    returns[name] = tree.absolute(module, annotation)
    return returns


class ModuleWalker:
    def __init__(
        self, tree: SourceTree, module: object, protocol_returns: dict[str, str], roots: Roots = ASCEND_ROOTS
    ) -> None:
        self.tree = tree
        self.roots = roots
        self.tracked = roots.tracked
        self.module = module
        self.protocol_returns = protocol_returns
        self.parents = {child: parent for parent in ast.walk(module.tree) for child in ast.iter_child_nodes(parent)}
        self.uses: list[Use] = []
        self._returns: dict[str, str | None] = {}
        self._locals: dict[tuple[int, int], dict[str, str]] = {}
        self._self_attrs: dict[tuple[int, str], str | None] = {}

    def where(self, node: ast.AST) -> str:
        return f"{self.tree.relpath(self.module.path)}:{getattr(node, 'lineno', 0)}"

    # --- scopes ----------------------------------------------------------------------------------------------
    def scope_of(self, node: ast.AST) -> dict[str, str]:
        """Tracked local names visible at `node`: imports and assignments of the enclosing functions (outermost
        first, so inner ones win), and annotated parameters."""
        functions = []
        current = self.parents.get(node)
        while current is not None:
            if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append(current)
            current = self.parents.get(current)
        scope: dict[str, str] = {}
        for function in reversed(functions):
            scope.update(self.locals_of(function, scope))
        return scope

    def locals_of(self, function: ast.FunctionDef | ast.AsyncFunctionDef, outer: dict[str, str]) -> dict[str, str]:
        key = (id(function), hash(frozenset(outer.items())))
        if key not in self._locals:
            self._locals[key] = dict(outer)  # while it is being computed (self.x = ... may refer back)
            self._locals[key] = self._compute_locals(function, outer)
        return self._locals[key]

    def _compute_locals(
        self, function: ast.FunctionDef | ast.AsyncFunctionDef, outer: dict[str, str]
    ) -> dict[str, str]:
        scope = dict(outer)
        for arg in [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]:
            typed = self.annotation_path(arg.annotation)
            if typed is not None:
                scope[arg.arg] = typed + "()"
        for stmt in ast.walk(function):
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                scope.update(self.import_targets(stmt))
        for stmt in ast.walk(function):
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                value = self.path_of(stmt.value, scope)
                if value is not None:
                    scope[stmt.targets[0].id] = value
        return scope

    def import_targets(self, stmt: ast.Import | ast.ImportFrom) -> dict[str, str]:
        names = {}
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        else:
            package = self.module.name if self.module.is_package else self.module.name.rpartition(".")[0]
            source = self.tree._absolute_module(package, stmt.module, stmt.level)
            for alias in stmt.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{source}.{alias.name}"
        return names

    def annotation_path(self, node: ast.expr | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | None
            return self.annotation_path(node.left) or self.annotation_path(node.right)
        path = dotted(node) if node is not None else None
        if path is None:
            return None
        resolved = self.global_path(path)
        return resolved if resolved is not None and self.tracked(resolved) else None

    # --- values ------------------------------------------------------------------------------------------------
    def global_path(self, path: str) -> str | None:
        head, _, rest = path.partition(".")
        binding = self.module.bindings.get(head)
        if binding is None:
            return path if head in ("torch",) or self.tracked(path) else None
        absolute = self.tree.absolute(self.module, head)
        return absolute + ("." + rest if rest else "")

    def path_of(self, node: ast.expr, scope: dict[str, str]) -> str | None:
        """The tracked path an expression denotes, with `()` for call results; None if untracked."""
        if isinstance(node, ast.Name):
            if node.id in scope:
                return scope[node.id]
            path = self.global_path(node.id)
            return (
                path
                if path is not None and (self.tracked(path) or path == "torch" or self.is_project_function(path))
                else None
            )
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.self_attribute(node)
            base = self.path_of(node.value, scope)
            return None if base is None else f"{base}.{node.attr}"
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Call) and dotted(node.func.func) == "super":
                return None  # super().x(...) is handled by the class walk
            func = self.path_of(node.func, scope)
            if func is None:
                return None
            if self.is_project_function(func):
                return self.returned_path(func)
            return func + "()"
        return None

    def is_project_function(self, path: str) -> bool:
        return isinstance(self.tree.resolve(path), Function) if path.startswith("ascend_graph") else False

    def returned_path(self, path: str) -> str | None:
        """What a project function returns, when every `return` returns the same tracked path."""
        if path not in self._returns:
            self._returns[path] = None
            function = self.tree.resolve(path)
            walker = self if function.where.startswith(self.tree.relpath(self.module.path)) else None
            if walker is not None:
                scope = self.locals_of(function.node, {})
                values = {
                    walker.path_of(r.value, scope)
                    for r in ast.walk(function.node)
                    if isinstance(r, ast.Return) and r.value is not None
                }
                if len(values) == 1:
                    value = values.pop()
                    self._returns[path] = value if value is not None and self.tracked(value) else None
        return self._returns[path]

    def self_attribute(self, node: ast.Attribute) -> str | None:
        """`self.x` in a method: the class field annotation or the `self.x = ...` assignment of that class."""
        klass = self.enclosing_class(node)
        if klass is None:
            return None
        key = (id(klass), node.attr)
        if key not in self._self_attrs:
            self._self_attrs[key] = None  # guards recursion through `self.x = self.x ...`
            self._self_attrs[key] = self._self_attribute(klass, node)
        return self._self_attrs[key]

    def _self_attribute(self, klass: ast.ClassDef, node: ast.Attribute) -> str | None:
        for stmt in klass.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == node.attr:
                named = annotated_as(stmt.annotation, self.roots)
                if named is not None:
                    return named
                typed = self.annotation_path(stmt.annotation)
                if typed is not None:
                    return typed + "()"
        for stmt in ast.walk(klass):
            if isinstance(stmt, ast.Assign) and any(dotted(t) == f"self.{node.attr}" for t in stmt.targets):
                value = self.path_of(stmt.value, self.scope_of(stmt))
                if value is not None:
                    return value
        return None

    def enclosing_class(self, node: ast.AST) -> ast.ClassDef | None:
        current = self.parents.get(node)
        while current is not None and not isinstance(current, ast.ClassDef):
            current = self.parents.get(current)
        return current

    # --- the walk ---------------------------------------------------------------------------------------------
    def walk(self) -> list[Use]:
        for node in ast.walk(self.module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for path in self.import_targets(node).values():
                    if self.tracked(path):
                        self.uses.append(Use("import", path, self.where(node)))
            elif isinstance(node, ast.Attribute | ast.Name):
                self.visit_name(node)
            elif isinstance(node, ast.ClassDef):
                self.visit_class(node)
            elif isinstance(node, ast.FunctionDef) and node.name in self.protocol_returns:
                returned = self.annotation_path(node.returns)
                if returned is not None and self.enclosing_class(node) is not None:
                    self.uses.append(
                        Use("protocol", returned, self.where(node), value=self.protocol_returns[node.name])
                    )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                self.visit_string(node)
        return self.uses

    def visit_name(self, node: ast.Attribute | ast.Name) -> None:
        parent = self.parents.get(node)
        if isinstance(parent, ast.Attribute) and parent.value is node:
            return  # the longer chain is the use
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            return
        if isinstance(parent, ast.ImportFrom | ast.Import) or isinstance(parent, ast.ClassDef) and node in parent.bases:
            return
        scope = self.scope_of(node)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            owner = self.path_of(node.value, scope)
            if owner is not None and self.tracked(owner):
                value = self.parents.get(node)
                literal = (
                    value.value.value
                    if isinstance(value, ast.Assign) and isinstance(value.value, ast.Constant)
                    else NO_LITERAL
                )
                self.uses.append(Use("option", owner, self.where(node), value=(node.attr, literal)))
            return
        path = self.path_of(node, scope)
        if (
            path is None
            or not self.tracked(path)
            or (isinstance(node, ast.Name) and node.id in scope and path.endswith("()"))
        ):
            return
        if isinstance(parent, ast.Call) and parent.func is node:
            self.uses.append(self.call_use(path, parent))
        else:
            self.uses.append(Use("name", path, self.where(node)))

    def call_use(self, path: str, call: ast.Call) -> Use:
        keywords = tuple(k.arg for k in call.keywords if k.arg is not None)
        star = any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)
        positional = sum(1 for a in call.args if not isinstance(a, ast.Starred))
        return Use("call", path, self.where(call), positional, keywords, star, self.result_use(call))

    def result_use(self, call: ast.Call) -> tuple[str, int]:
        return result_use(self.parents, call)

    def visit_class(self, node: ast.ClassDef) -> None:
        project_class = f"{self.module.name}.{node.name}"
        for base in node.bases:
            path = self.path_of(base, {})
            if path is not None and self.tracked(path):
                self.uses.append(Use("subclass", path, self.where(node), value=project_class))

    def visit_string(self, node: ast.Constant) -> None:
        text = node.value
        parent = self.parents.get(node)
        if text == OWN_DISTRIBUTION or _names_no_object(parent):
            return
        if self.roots.dotted_string(text):
            self.uses.append(Use("string", text, self.where(node)))
        elif isinstance(parent, ast.Call) and node in parent.args and self.roots.words.search(text):
            called = (dotted(parent.func) or "").rpartition(".")[2]
            if called in MODULE_FINDERS:
                self.uses.append(Use("module", text, self.where(node)))
            elif called in VERSION_READERS:
                self.uses.append(Use("distribution", text, self.where(node)))
        elif isinstance(parent, ast.Tuple) and self.roots.words.search(text) and self.in_versions_constant(parent):
            self.uses.append(Use("distribution", text, self.where(node)))

    def in_versions_constant(self, node: ast.Tuple) -> bool:
        parent = self.parents.get(node)
        return isinstance(parent, ast.Assign) and any("VERSION" in (dotted(t) or "") for t in parent.targets)


def result_use(parents: dict[ast.AST, ast.AST], call: ast.Call) -> tuple[str, int]:
    """How a call's result is used: ("unpack", n), ("index", i), ("kept", 0) or ("whole", 0)."""
    parent = parents.get(call)
    if isinstance(parent, ast.Subscript) and parent.value is call:
        index = parent.slice
        literal = isinstance(index, ast.Constant) and isinstance(index.value, int)
        return ("index", index.value) if literal else ("kept", 0)
    if isinstance(parent, ast.Assign) and parent.value is call:
        target = parent.targets[0]
        if isinstance(target, ast.Tuple | ast.List) and not any(isinstance(e, ast.Starred) for e in target.elts):
            return ("unpack", len(target.elts))
        return ("kept", 0)
    if isinstance(parent, ast.Expr | ast.withitem):
        return ("kept", 0)
    return ("whole", 0)


NOT_OBJECT_NAMES = re.compile(r"logger|entry_point", re.IGNORECASE)


def _names_no_object(parent: ast.AST | None) -> bool:
    """A string given to a logger or an entry-point lookup (`getLogger("vllm.ascend_graph")`,
    `entry_points(group="vllm.platform_plugins")`): a dotted name, but not of a module or object."""
    if isinstance(parent, ast.keyword):
        return parent.arg == "group"
    return isinstance(parent, ast.Call) and bool(NOT_OBJECT_NAMES.search(dotted(parent.func) or ""))


def super_calls(tree: SourceTree, project_class: Klass) -> Iterator[tuple[Klass, ast.Call, str]]:
    """`super().name(...)` calls in the methods of `project_class` and its project bases."""
    for klass in tree.mro(project_class):
        if not isinstance(klass, Klass):
            continue
        for node in ast.walk(klass.node):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                inner = node.func.value
                if isinstance(inner, ast.Call) and dotted(inner.func) == "super":
                    yield klass, node, node.func.attr
