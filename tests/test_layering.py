"""The package's shape: no import cycle (function-level imports included) and
no module over the size limit.

Both checks read the source with `ast`, so they need no backend and run in
well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "keras_towers"
PACKAGE = "keras_towers"
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at any depth of its code.

    `from a.b import c` is an edge to `a.b.c` when that is a module, else to
    `a.b`. Importing a submodule runs its parents' `__init__` too, but that is
    not a dependency the importer chose, so it is not an edge.
    """
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    if not is_package:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in modules else base)
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _edges_inside(graph, component) -> list[str]:
    members = set(component)
    return [
        f"{a} -> {b}"
        for a in sorted(component)
        for b in sorted(graph[a])
        if b in members
    ]


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30, "the module scan found too few modules"
    cycles = find_cycles(graph)
    message = "\n\n".join(
        f"cycle of {len(c)} modules:\n  " + "\n  ".join(_edges_inside(graph, c))
        for c in cycles
    )
    assert not cycles, f"Import cycles inside {PACKAGE}:\n{message}"


def test_cycle_finder_sees_function_level_imports():
    # The detector itself: a cycle closed by an import inside a function.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    source = "def f():\n    from keras_towers.models import clip\n"
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert nodes and nodes[0].module == "keras_towers.models"


def test_no_module_over_size_limit():
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in package_modules().items()
    }
    too_big = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_big, f"Modules over {MAX_LINES} lines: {too_big}"
