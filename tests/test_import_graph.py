"""The package's modules import each other without a circle, type-only imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "actorflow"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` (module ``name``) imports, wherever the import
    statement is (under ``if TYPE_CHECKING:`` and inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")
                head = head[: len(head) - (node.level - 1)]
                base = ".".join([*head, base] if base else head)
            # "from a import b" imports module a.b when there is one, else a name of a
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            module = target
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, module_name(path), modules) for path in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_the_checker_sees_type_only_and_relative_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from actorflow.job import JobRecord\n"
        "from . import flow\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    modules = {"actorflow", "actorflow.job", "actorflow.flow", "actorflow.probe"}
    found = imported_modules(path, "actorflow.probe", modules)
    assert found == {"actorflow", "actorflow.job", "actorflow.flow"}


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 50  # every module was read
    assert circles(graph) == []


def test_the_former_error_handling_path_still_imports_and_warns() -> None:
    import importlib
    import sys

    import pytest

    from actorflow import error_strategies

    sys.modules.pop("actorflow.error_handling", None)
    with pytest.warns(DeprecationWarning, match="actorflow.error_strategies"):
        former = importlib.import_module("actorflow.error_handling")
    assert former.ErrorStrategy is error_strategies.ErrorStrategy
    assert former.as_error_strategy is error_strategies.as_error_strategy


def private_uses_of_imported_names(path: Path) -> list[str]:
    """``Name._attribute`` where ``Name`` was imported from another module of the package, and
    ``from actorflow.module import _name``: a class's or module's private name used from
    outside it."""
    tree = ast.parse(path.read_text(), str(path))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("actorflow")
        ):
            imported.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(
                alias.asname or alias.name.partition(".")[0]
                for alias in node.names
                if alias.name.startswith("actorflow")
            )
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("actorflow")
        ):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    inside = path.is_relative_to(PACKAGE.parent)
                    where = path.relative_to(PACKAGE.parent) if inside else path.name
                    found.append(f"{where}:{node.lineno}: import {alias.name}")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            inside = path.is_relative_to(PACKAGE.parent)
            where = path.relative_to(PACKAGE.parent) if inside else path.name
            found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_reads_a_private_name_of_what_it_imports() -> None:
    found = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        for use in private_uses_of_imported_names(path)
    ]
    assert found == []


def test_the_private_name_check_finds_a_planted_use(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from actorflow.job import JobContext\n"
        "from actorflow.job import _detached_record\n"
        "\n"
        "VIEW = JobContext._view\n"
    )
    assert private_uses_of_imported_names(planted) == [
        "planted.py:2: import _detached_record",
        "planted.py:4: JobContext._view",
    ]
