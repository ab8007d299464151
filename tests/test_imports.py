"""How gaussdiff's modules import each other: no cycles, and the kernels' layers point down.

Read from the source with ``ast`` (nothing is imported), so an import inside a function counts
as much as one at the top of a module: an import placed in a function to dodge a cycle is
still the cycle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gaussdiff"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``) for every module of gaussdiff."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        init = parts[-1] == "__init__"
        out[".".join(parts[:-1] if init else parts)] = (path, init)
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the gaussdiff modules it imports, anywhere in its source. ``from . import x``
    points at the submodule ``x`` where there is one, else at the package itself."""
    mods = _modules()
    graph = {}
    for name, (path, init) in mods.items():
        package = name if init else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if sub in mods else source)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_gaussdiff():
    """No module imports a module that imports it back, at the top or inside a function."""
    graph = _graph()
    assert "gaussdiff.kernels._core" in graph and "gaussdiff.empirical" in graph
    cycles = _cycles(graph)
    detail = [
        "  " + " <-> ".join(c) + ": " + "; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_kernel_layers_point_down():
    """The kernels package in layers: ``_core`` imports no other gaussdiff module; each backend
    imports only ``_core`` and the package-wide leaf ``gaussdiff._checks`` (never the package
    face, never another backend); the face (``__init__``: the dispatch) imports the backends and
    the core."""
    graph = _graph()
    core, face = "gaussdiff.kernels._core", "gaussdiff.kernels"
    backends = {f"{face}._numba", f"{face}._torch", f"{face}._triton"}
    assert {m for m in graph if m.startswith(face + ".")} == backends | {core}
    assert graph[core] == set()
    for b in backends:
        assert graph[b] - {"gaussdiff._checks"} == {core}, (b, graph[b])
    assert graph["gaussdiff._checks"] == set()  # the leaf every module may import
    assert graph[face] == backends | {core}
