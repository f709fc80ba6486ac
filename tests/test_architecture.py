"""The architecture as a test: no import cycle between modules, lower layers never import
higher ones (backends <- srigl <- suite), and no function over 100 lines.

The graph is read with ``ast`` from the source (imports inside functions included, because a
function-local import is how a cycle hides), so it needs no import of torch. Package
``__init__`` modules are left out: their re-exports make every submodule "import" its package.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("backends", "srigl", "suite", "hydra_plugins")
# A module of a package may import only these top-level packages of the project.
ALLOWED = {
    "backends": {"backends"},
    "srigl": {"backends", "srigl"},
    "suite": {"backends", "srigl", "suite"},
    "hydra_plugins": {"backends", "srigl", "suite", "hydra_plugins"},
}


def module_files() -> dict[str, pathlib.Path]:
    """``{dotted module name: file}`` of every project module (``__init__`` as the package)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported(tree: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    base = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix
            for alias in node.names:
                yield f"{prefix}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    """Edges module -> project modules it imports, ``__init__`` modules left out."""
    files = module_files()
    packages = {n for n, p in files.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        if name in packages:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for target in _imported(tree, name, False):
            if target in files and target not in packages and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
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
    return found


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same edges between sub-packages (``suite.train`` -> ``suite.bench``), so that two
    packages that import each other through different modules are a cycle too."""

    def group(module: str) -> str:
        return ".".join(module.split(".")[:2])

    grouped: dict[str, set[str]] = {}
    for source, targets in graph.items():
        edges = grouped.setdefault(group(source), set())
        edges.update(group(t) for t in targets if group(t) != group(source))
    return grouped


def test_no_import_cycle_between_modules():
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycle(s): {found}"


def test_no_import_cycle_between_subpackages():
    found = cycles(subpackage_graph(import_graph()))
    assert not found, f"{len(found)} sub-package cycle(s): {found}"


def test_lower_layers_never_import_higher_ones():
    wrong = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[source.split(".")[0]]
    ]
    assert not wrong, wrong


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


MAX_FUNCTION_LINES = 100


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str]]:
    """``(lines, "file:function")`` of every project function longer than ``limit`` lines."""
    found = []
    for path in module_files().values():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append((lines, f"{path.relative_to(ROOT)}:{node.name}"))
    return sorted(found, reverse=True)


def test_no_function_over_100_lines():
    assert not long_functions(), long_functions()
