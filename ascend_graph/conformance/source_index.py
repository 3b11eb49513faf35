"""A static index of Python source trees, read with `ast` and never imported.

torch_npu cannot be imported without Ascend's CANN libraries, and vllm-ascend imports torch_npu, so the conformance
check reads their sources instead: what each module binds (functions, classes, imports, star imports, plain
values), what each class defines (methods with their kind, class attributes, the attributes its methods set on
`self`), and each function's signature as an `inspect.Signature` built from the `def` line. The same index reads
ascend_graph's own sources, so a project class can be followed to the reference class it extends.

`SourceTree.resolve("torch.npu.NPUGraph.capture_begin")` walks a dotted name the way attribute access would at
run time: the longest prefix that is a module, then one member at a time (module bindings, submodules, star
imports; class bodies, then bases). It answers with what it found, `Missing` (the chain breaks at a named step)
or `Unknown` (the chain leaves the readable sources: a C-extension base class, a module-level `__getattr__`, an
attribute of a plain value), which the check reports as unverifiable instead of guessing.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SKIPPED_BASES = {"object", "Protocol", "Generic", "ABC", "typing.Protocol", "typing.Generic", "abc.ABC"}


class SourceDefault:
    """A parameter default as its source text (what the signature table prints)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_from_ast(args: ast.arguments, drop_first: bool = False) -> inspect.Signature:
    """The `inspect.Signature` of a `def` line; `drop_first` removes `self`/`cls` for bound calls."""
    kinds = inspect.Parameter
    positional = [(arg, kinds.POSITIONAL_ONLY) for arg in args.posonlyargs]
    positional += [(arg, kinds.POSITIONAL_OR_KEYWORD) for arg in args.args]
    first_default = len(positional) - len(args.defaults)
    params = []
    for index, (arg, kind) in enumerate(positional):
        default = args.defaults[index - first_default] if index >= first_default else None
        params.append(_parameter(arg.arg, kind, default))
    if args.vararg is not None:
        params.append(kinds(args.vararg.arg, kinds.VAR_POSITIONAL))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(_parameter(arg.arg, kinds.KEYWORD_ONLY, default))
    if args.kwarg is not None:
        params.append(kinds(args.kwarg.arg, kinds.VAR_KEYWORD))
    if drop_first and params and params[0].kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    return inspect.Signature(params)


def _parameter(name: str, kind: inspect._ParameterKind, default: ast.expr | None) -> inspect.Parameter:
    if default is None:
        return inspect.Parameter(name, kind)
    return inspect.Parameter(name, kind, default=SourceDefault(ast.unparse(default)))


def dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


@dataclass
class Function:
    qualname: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    where: str
    kind: str  # "function", "method", "classmethod", "staticmethod", "property"

    def signature(self, bound: bool) -> inspect.Signature:
        drop = bound and self.kind in ("method", "classmethod", "property")
        return signature_from_ast(self.node.args, drop_first=drop)


@dataclass
class Value:
    """A name bound to something other than a def, class or import (an assignment, an annotation)."""

    qualname: str
    where: str
    node: ast.AST | None = None
    module: Module | None = None  # where a `self.x = SomeClass()` attribute's class name is looked up


@dataclass
class Unknown:
    """The chain leaves what can be read: `reason` says where."""

    qualname: str
    reason: str


@dataclass
class Missing:
    """The chain breaks: `owner` (a module or class) has no member `name`."""

    qualname: str
    owner: str
    name: str


@dataclass
class Alias:
    target: str  # an absolute dotted path


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    bindings: dict[str, object] = field(default_factory=dict)
    star_imports: list[str] = field(default_factory=list)
    all_names: list[str] | None = None
    has_getattr: bool = False

    @property
    def qualname(self) -> str:
        return self.name


@dataclass
class Klass:
    qualname: str
    node: ast.ClassDef
    module: Module
    where: str
    members: dict[str, object] = field(default_factory=dict)
    instance_attrs: dict[str, Value] = field(default_factory=dict)

    def base_paths(self, tree: SourceTree) -> list[str]:
        """The bases as absolute dotted paths (resolved through the defining module's imports)."""
        paths = []
        for base in self.node.bases:
            name = dotted(base.value if isinstance(base, ast.Subscript) else base)
            if name is None or name in SKIPPED_BASES:
                continue
            paths.append(tree.absolute(self.module, name))
        return paths


def _function_kind(node: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> str:
    if not in_class:
        return "function"
    names = {dotted(d) or "" for d in node.decorator_list}
    names |= {dotted(d.func) or "" for d in node.decorator_list if isinstance(d, ast.Call)}
    for kind in ("classmethod", "staticmethod", "property"):
        if kind in names:
            return kind
    if any(name.endswith((".setter", ".getter", ".deleter", "cached_property")) for name in names):
        return "property"
    return "method"


def _flat_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a block, entering if/try/with (every branch: a name bound on any path exists)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            yield from _flat_statements(stmt.body)
            yield from _flat_statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *[h.body for h in stmt.handlers]):
                yield from _flat_statements(block)
        elif isinstance(stmt, ast.With):
            yield from _flat_statements(stmt.body)
        else:
            yield stmt


def _assigned_names(stmt: ast.stmt) -> list[str]:
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        targets = [stmt.target]
    names = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.append(node.id)
    return names


class SourceTree:
    """Modules under one or more roots. `packages` maps a top-level package name to the directory holding it;
    `aliases` maps a module name prefix to the module that really provides it (torch_npu puts
    `torch_npu.dynamo.torchair` into `sys.modules` as `torchair`, and registers `torch_npu.npu` as `torch.npu`)."""

    def __init__(self, packages: dict[str, Path], aliases: dict[str, str] | None = None, label: str = "") -> None:
        self.packages = packages
        self.aliases = dict(sorted((aliases or {}).items(), key=lambda item: -len(item[0])))
        self.label = label
        self.extra: dict[str, dict[str, object]] = {}  # module name -> names provided at import time
        self._modules: dict[str, Module | None] = {}

    # --- modules -------------------------------------------------------------------------------------------
    def real_name(self, name: str) -> str:
        for prefix, target in self.aliases.items():
            if name == prefix or name.startswith(prefix + "."):
                return target + name[len(prefix) :]
        return name

    def file_of(self, name: str) -> tuple[Path, bool] | None:
        parts = self.real_name(name).split(".")
        base = self.packages.get(parts[0])
        if base is None:
            return None
        folder = base.joinpath(*parts)
        if (folder / "__init__.py").is_file():
            return folder / "__init__.py", True
        single = base.joinpath(*parts[:-1], parts[-1] + ".py")
        return (single, False) if single.is_file() else None

    def module(self, name: str) -> Module | None:
        real = self.real_name(name)
        if real not in self._modules:
            found = self.file_of(real)
            self._modules[real] = None if found is None else self._parse(real, *found)
        return self._modules[real]

    def relpath(self, path: Path) -> str:
        for base in self.packages.values():
            if path.is_relative_to(base):
                return str(path.relative_to(base))
        return str(path)

    def _parse(self, name: str, path: Path, is_package: bool) -> Module:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
        module = Module(name, path, tree, is_package)
        package = name if is_package else name.rpartition(".")[0]
        for stmt in _flat_statements(tree.body):
            self._bind(module, package, stmt)
        return module

    def where(self, module: Module, node: ast.AST) -> str:
        return f"{self.relpath(module.path)}:{getattr(node, 'lineno', 0)}"

    def _bind(self, module: Module, package: str, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            qualname = f"{module.name}.{stmt.name}"
            module.bindings[stmt.name] = Function(qualname, stmt, self.where(module, stmt), "function")
            module.has_getattr |= stmt.name == "__getattr__"
        elif isinstance(stmt, ast.ClassDef):
            module.bindings[stmt.name] = self._klass(module, stmt, f"{module.name}.{stmt.name}")
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    module.bindings[alias.asname] = Alias(alias.name)
                else:
                    top = alias.name.split(".")[0]
                    module.bindings[top] = Alias(top)
        elif isinstance(stmt, ast.ImportFrom):
            source = self._absolute_module(package, stmt.module, stmt.level)
            for alias in stmt.names:
                if alias.name == "*":
                    module.star_imports.append(source)
                else:
                    module.bindings[alias.asname or alias.name] = Alias(f"{source}.{alias.name}")
        elif _renamed(stmt) is not None:  # `CudaPlatform = NvmlCudaPlatform if nvml_available else ...`
            name, target = _renamed(stmt)
            module.bindings.setdefault(name, Alias(self.absolute(module, target)))
        else:
            for name in _assigned_names(stmt):
                module.bindings.setdefault(name, Value(f"{module.name}.{name}", self.where(module, stmt), stmt))
                if name == "__all__" and isinstance(stmt, ast.Assign | ast.AnnAssign):
                    module.all_names = _string_list(stmt.value)

    @staticmethod
    def _absolute_module(package: str, name: str | None, level: int) -> str:
        if level == 0:
            return name or ""
        parts = package.split(".")
        base = parts[: len(parts) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    def _klass(self, module: Module, node: ast.ClassDef, qualname: str) -> Klass:
        klass = Klass(qualname, node, module, self.where(module, node))
        for stmt in _flat_statements(node.body):
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                kind = _function_kind(stmt, in_class=True)
                function = Function(f"{qualname}.{stmt.name}", stmt, self.where(module, stmt), kind)
                if kind != "property" or stmt.name not in klass.members:
                    klass.members[stmt.name] = function
                for inner in ast.walk(stmt):
                    if isinstance(inner, ast.Assign | ast.AnnAssign):
                        targets = inner.targets if isinstance(inner, ast.Assign) else [inner.target]
                        # `self.a, self.b = ...` sets both
                        targets = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
                        for target in targets:
                            if isinstance(target, ast.Attribute) and dotted(target.value) == "self":
                                value = Value(f"{qualname}.{target.attr}", self.where(module, inner), inner, module)
                                klass.instance_attrs.setdefault(target.attr, value)
            elif isinstance(stmt, ast.ClassDef):
                klass.members[stmt.name] = self._klass(module, stmt, f"{qualname}.{stmt.name}")
            else:
                for name in _assigned_names(stmt):
                    klass.members.setdefault(name, Value(f"{qualname}.{name}", self.where(module, stmt), stmt))
        return klass

    def absolute(self, module: Module, name: str) -> str:
        """A dotted name as written in `module`, made absolute through that module's own bindings."""
        head, _, rest = name.partition(".")
        binding = module.bindings.get(head)
        if isinstance(binding, Alias):
            return binding.target + ("." + rest if rest else "")
        if isinstance(binding, Klass | Function | Value):
            return binding.qualname + ("." + rest if rest else "")
        return name

    # --- resolution ----------------------------------------------------------------------------------------
    def resolve(self, name: str, _seen: frozenset[str] = frozenset()) -> object:
        """What `name` denotes: Module, Klass, Function, Value, an extra entity, Unknown or Missing."""
        if name in _seen:
            return Unknown(name, "import cycle")
        seen = _seen | {name}
        parts = name.split(".")
        for split in range(len(parts), 0, -1):
            module = self.module(".".join(parts[:split]))
            if module is not None:
                entity: object = module
                for part in parts[split:]:
                    entity = self.member(entity, part, seen)
                    if isinstance(entity, Missing | Unknown):
                        return entity
                return entity
        return Missing(name, parts[0], parts[0])

    def member(self, entity: object, name: str, seen: frozenset[str] = frozenset()) -> object:
        if isinstance(entity, Module):
            return self._module_member(entity, name, seen)
        if isinstance(entity, Klass):
            return self.class_member(entity, name, seen)
        if isinstance(entity, Unknown | Missing):
            return entity
        qualname = getattr(entity, "qualname", "?")
        return Unknown(f"{qualname}.{name}", f"attribute of {type(entity).__name__.lower()} {qualname}")

    def _deref(self, binding: object, seen: frozenset[str]) -> object:
        return self.resolve(binding.target, seen) if isinstance(binding, Alias) else binding

    def _module_member(self, module: Module, name: str, seen: frozenset[str]) -> object:
        extra = self.extra.get(module.name, {})
        if name in extra:
            return extra[name]
        if name in module.bindings:
            return self._deref(module.bindings[name], seen)
        submodule = self.module(f"{module.name}.{name}")
        if submodule is not None:
            return submodule
        for source in module.star_imports:
            star = self.module(source)
            if star is None:
                continue
            exported = star.all_names if star.all_names is not None else [n for n in star.bindings if n[0] != "_"]
            if name in exported:
                return self._module_member(star, name, seen)
        if module.has_getattr:
            return Unknown(f"{module.name}.{name}", f"module {module.name} has a module-level __getattr__")
        return Missing(f"{module.name}.{name}", module.name, name)

    def class_member(self, klass: Klass, name: str, seen: frozenset[str] = frozenset()) -> object:
        """A class attribute, an attribute its methods set on `self`, or one from a base (in base order)."""
        for current in self.mro(klass):
            if isinstance(current, Unknown):
                return Unknown(f"{klass.qualname}.{name}", current.reason)
            if name in current.members:
                return current.members[name]
            if name in current.instance_attrs:
                return current.instance_attrs[name]
        return Missing(f"{klass.qualname}.{name}", klass.qualname, name)

    def mro(self, klass: Klass) -> list[Klass | Unknown]:
        """Depth-first, left-to-right bases (enough for the single-inheritance classes checked here); a base
        outside the readable sources ends the list with an Unknown."""
        order: list[Klass | Unknown] = []
        stack = [klass]
        visited: set[str] = set()
        while stack:
            current = stack.pop(0)
            if current.qualname in visited:
                continue
            visited.add(current.qualname)
            order.append(current)
            bases = []
            for path in current.base_paths(self):
                base = self.resolve(path)
                if isinstance(base, Klass):
                    bases.append(base)
                else:
                    order.append(Unknown(path, f"base class {path} of {current.qualname} is outside {self.label}"))
            stack = bases + stack
        known = [entry for entry in order if isinstance(entry, Klass)]
        unknown = [entry for entry in order if isinstance(entry, Unknown)]
        return [*known, *unknown]

    def constructed_class(self, value: Value) -> Klass | None:
        """The class of `self.x = SomeClass(...)`, so that `obj.x.option` can be followed."""
        node = getattr(value.node, "value", None)
        if value.module is None or not isinstance(node, ast.Call) or dotted(node.func) is None:
            return None
        found = self.resolve(self.absolute(value.module, dotted(node.func)))
        return found if isinstance(found, Klass) else None

    def call_signature(self, klass: Klass) -> inspect.Signature | Unknown:
        """The signature of calling the class: the first `__init__` (or `__new__`) along its bases."""
        for current in self.mro(klass):
            if isinstance(current, Unknown):
                return current
            generated = _dataclass_signature(current, self)
            if generated is not None and "__init__" not in current.members:
                return generated
            for special in ("__init__", "__new__"):
                function = current.members.get(special)
                if isinstance(function, Function):
                    return signature_from_ast(function.node.args, drop_first=True)
        return inspect.Signature([])


def _renamed(stmt: ast.stmt) -> tuple[str, str] | None:
    """`X = Y` or `X = Y if cond else Z` at module level, with Y a dotted name: (X, Y). The conditional one is read
    as its first branch (vLLM's `CudaPlatform` is the NVML one wherever NVML loads; both share one base class)."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
        return None
    value = stmt.value.body if isinstance(stmt.value, ast.IfExp) else stmt.value
    target = dotted(value) if isinstance(value, ast.Name | ast.Attribute) else None
    return (stmt.targets[0].id, target) if target is not None and target != stmt.targets[0].id else None


def _dataclass_signature(klass: Klass, tree: SourceTree) -> inspect.Signature | None:
    """The generated `__init__` of a `@dataclass` without its own: its annotated fields, bases' first."""
    if not any(
        (dotted(d.func if isinstance(d, ast.Call) else d) or "").endswith("dataclass")
        for d in klass.node.decorator_list
    ):
        return None
    fields: dict[str, inspect.Parameter] = {}
    for current in reversed([k for k in tree.mro(klass) if isinstance(k, Klass)]):
        for stmt in current.node.body:
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and "ClassVar" not in ast.unparse(stmt.annotation)
            ):
                default = inspect.Parameter.empty if stmt.value is None else SourceDefault(ast.unparse(stmt.value))
                fields[stmt.target.id] = inspect.Parameter(
                    stmt.target.id, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default
                )
    return inspect.Signature(list(fields.values()), __validate_parameters__=False)


def _string_list(node: ast.expr | None) -> list[str] | None:
    if isinstance(node, ast.List | ast.Tuple):
        return [elt.value for elt in node.elts if isinstance(elt, ast.Constant) and isinstance(elt.value, str)]
    return None
