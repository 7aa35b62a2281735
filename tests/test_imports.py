"""The package's imports flow one way: no file-level or package-level cycle, no import upward through the layers
(core -> layers -> models -> checkpoints -> hub/data -> ssl -> engine -> deploy/tools -> cli), no private names across
modules. Every import counts: module level, inside functions and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swinkit"

# Each layer may import its own and lower layers only. The package root (the public API) and ``__main__`` sit on top.
LAYERS = {
    "core": 0, "runtime": 0, "layers": 1, "models": 2, "checkpoints": 3, "hub": 4, "data": 4, "ssl": 5, "engine": 6,
    "deploy": 7, "tools": 7, "cli": 8, "__init__": 9, "__main__": 9,
}  # fmt: skip
LOW = ("layers", "models", "checkpoints", "hub", "data", "ssl")
HIGH = ("engine", "deploy", "cli")


def _module_name(path: Path) -> str:
    parts = ["swinkit", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """(imported swinkit module, names taken from it) for every import statement of module ``name``."""
    path = MODULES[name]
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "swinkit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "swinkit":
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{target}.{n}" in MODULES]
            found += [(f"{target}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest or not submodules:
                found.append((target, rest))
    return [(t, n) for t, n in found if t in MODULES]


GRAPH = {name: sorted({t for t, _ in _imports(name)} - {name}) for name in MODULES}


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_package():
    assert len(MODULES) > 40 and "swinkit.engine.loop" in GRAPH
    assert "swinkit.engine.setup" in GRAPH["swinkit.engine.evaluate"]  # function-level imports count too


def test_no_file_level_cycle():
    graph = {m: [t for t in ts if not (_is_package(t) and m.startswith(t + "."))] for m, ts in GRAPH.items()}
    assert _cycles(graph) == []


def test_no_package_level_cycle():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        layer = _layer(module)
        packages.setdefault(layer, set()).update(_layer(t) for t in targets if _layer(t) != layer)
    assert _cycles({k: sorted(v) for k, v in packages.items()}) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_flow_down_the_layers(module):
    layer = _layer(module)
    upward = [t for t in GRAPH[module] if LAYERS[_layer(t)] > LAYERS[layer]]
    assert upward == [], f"{module} imports a higher layer"
    if layer in LOW:
        assert [t for t in GRAPH[module] if _layer(t) in HIGH] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_across_modules(module):
    private = [f"{t}.{n}" for t, names in _imports(module) for n in names if n.startswith("_") and t != module]
    assert private == []


def test_the_checker_catches_a_cycle_and_an_upward_import():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert LAYERS[_layer("swinkit.engine.loop")] > LAYERS[_layer("swinkit.ssl.moby")]
