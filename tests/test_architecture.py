"""The package's shape, as docs/architecture.md promises it: small modules and functions, one-way imports,
no private names across packages, no duck-typed substrates. A failure names the place to look."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ("hardware", "tasks", "envs", "agents", "demos")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: the root modules every part may use (they import nothing of pcmeta's parts)
BASE = {"files", "runs"}
#: what each part may import of pcmeta at module level (DESIGN.md)
ALLOWED = {"base": {"files"}, "hardware": BASE, "tasks": BASE, "envs": BASE | {"tasks"}, "agents": BASE | {"hardware", "tasks"},
           "demos": set(PARTS) | BASE}


def _modules():
    for name in sorted(BASE):
        path = REPO / f"{name}.py"
        yield "base", path, ast.parse(path.read_text(), filename=str(path))
    for part in PARTS:
        for path in sorted((REPO / part).rglob("*.py")):
            yield part, path, ast.parse(path.read_text(), filename=str(path))


def _name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = ["pcmeta", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(path: Path) -> str:
    """The package a module's relative imports start from."""
    name = _name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def _imports(tree: ast.AST, path: Path, top_level_only: bool):
    """(imported pcmeta module, imported names) of a module's import statements."""
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(path).split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pcmeta"):
                yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("pcmeta"):
                    yield a.name, []


def test_modules_and_functions_are_small():
    too_long = []
    for _, path, tree in _modules():
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {n} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_no_private_names_imported_across_packages():
    bad = []
    for _, path, tree in _modules():
        here_pkg = _package(path)
        for target, names in _imports(tree, path, top_level_only=False):
            other_pkg = target.rsplit(".", 1)[0]
            for n in names:
                if n.startswith("_") and not (target.startswith(here_pkg) or here_pkg.startswith(other_pkg)):
                    bad.append(f"{path.relative_to(REPO)}: from {target} import {n}")
    assert not bad, bad


def test_parts_import_one_way_at_module_level():
    bad = []
    for part, path, tree in _modules():
        for target, _ in _imports(tree, path, top_level_only=True):
            other = target.split(".")[1] if "." in target else ""
            if other and other != part and other not in ALLOWED.get(part, set()):
                bad.append(f"{path.relative_to(REPO)} imports {target}")
    assert not bad, bad


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for _, path, tree in _modules():
        here = _name(path)
        graph[here] = {t for t, _ in _imports(tree, path, top_level_only=True) if t != here}

    def visit(node, stack, seen):
        if node in stack:
            return stack[stack.index(node):] + [node]
        if node in seen or node not in graph:
            return None
        seen.add(node)
        for nxt in sorted(graph[node]):
            cycle = visit(nxt, stack + [node], seen)
            if cycle:
                return cycle
        return None

    seen: set[str] = set()
    for mod in sorted(graph):
        cycle = visit(mod, [], seen)
        # a package's __init__ re-exporting its own submodules is not a cycle of concepts
        if cycle and not all(c.startswith(cycle[0].rsplit(".", 1)[0]) for c in cycle):
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")


def test_substrates_are_not_duck_typed():
    bad = []
    for _, path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr" and len(node.args) == 2:
                attr = node.args[1]
                if isinstance(attr, ast.Constant) and attr.value in ("matmul", "read", "place", "update", "elapse"):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} hasattr(..., {attr.value!r})")
    assert not bad, bad
