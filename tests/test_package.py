"""The package's shape: modules form layers (the CLI on top, pure numpy at the bottom)."""

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "distgan"


def imports_of(path: Path) -> set[str]:
    """distgan modules that `path` imports anywhere, function bodies included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("distgan."):
                out.add(node.module.split(".")[1])
            elif node.module == "distgan":
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("distgan."))
    return out


def import_graph() -> dict[str, set[str]]:
    mods = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    return {m: (imports_of(PACKAGE / f"{m}.py") & mods) - {m} for m in sorted(mods)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in graph:
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_among_distgans_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_pure_core_imports_neither_tensorflow_nor_ray():
    for name in ("noise", "tiling", "config", "errors"):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not mods & {"tensorflow", "keras", "ray"}, name


def test_cli_sits_on_top():
    graph = import_graph()
    assert not any("cli" in deps for deps in graph.values())
