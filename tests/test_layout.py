"""The layout is the architecture: this reads every module's imports and holds them to the
dependency rules, so that the folders cannot drift from what the README says they are.

    __main__ > cli > app, worker, runner   the command line; assembly
    admin | console | intake  the REST API; the browser console; Segment's Tracking API (/v1):
                              doors that parse, call a service, render
    inbound | outbound        the two directions; never import each other (the /v1 intake
                              ends in the outbound's outbox, so it stands above both)
    environments, plans, queue, keyring
    store | http              the database; HTTP plumbing (neither imports the other)
    config, errors, spec, mapping, ... the base everything may use

A package may import its own modules and any package of a lower layer, nothing else.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "integration"

LAYERS = {
    0: {
        "__init__",
        "config",
        "errors",
        "logs",
        "metrics",
        "crypto",
        "throttle",
        "deadline",
        "spec",
        "rundir",
        "embedded",
        "mapping",  # Segment's mapping-kit and trigger language: pure, imports nothing of ours
    },
    1: {"store", "http"},
    2: {"environments", "plans", "queue", "keyring"},
    3: {"inbound", "outbound"},
    4: {"admin", "console", "intake"},
    5: {"app", "runner", "worker"},
    6: {"cli"},  # the package integration/cli/: one module per command group
    7: {"__main__"},
}
LAYER = {room: layer for layer, rooms in LAYERS.items() for room in rooms}

# Commands import what they run inside their function (the module docstring says why).
LAZY_IMPORTS_ALLOWED = {"cli"}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield ".".join(parts), path


def room(module: str) -> str:
    """The top-level room of `integration.<module>`: its package, or the module itself."""
    return module.split(".")[0]


def imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported integration module, line, inside a function) for every import."""
    tree = ast.parse(path.read_text())
    nested = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
    }
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("integration."):
                yield name.removeprefix("integration."), node.lineno, id(node) in nested


def test_every_room_has_a_layer() -> None:
    unplaced = {room(m) for m, _ in modules()} - set(LAYER)
    assert not unplaced, f"place these in LAYERS: {sorted(unplaced)}"


def test_dependencies_point_down() -> None:
    known = {room(m) for m, _ in modules()}
    wrong = []
    for module, path in modules():
        source = room(module)
        for target, line, _ in imports(path):
            target_room = room(target)
            if target_room not in known or target_room == source:
                continue
            same_base = LAYER[source] == LAYER[target_room] == 0
            if LAYER[target_room] >= LAYER[source] and not same_base:
                wrong.append(f"integration/{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not wrong, "imports against the layout:\n" + "\n".join(wrong)


def test_no_function_level_imports_without_a_reason() -> None:
    lazy = [
        f"integration/{path.relative_to(PACKAGE)}:{line}"
        for module, path in modules()
        if room(module) not in LAZY_IMPORTS_ALLOWED
        for _, line, nested in imports(path)
        if nested
    ]
    assert not lazy, "imports inside functions:\n" + "\n".join(lazy)


def test_no_import_cycles_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    names = {m for m, _ in modules()}
    for module, path in modules():
        graph[module] = {t for t, _, _ in imports(path) if t in names and t != module}
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, f"modules importing each other: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively written out as recursion on a small graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        ("inbound", "outbound"),
        ("outbound", "inbound"),
        ("intake", "inbound"),
        ("inbound", "intake"),
        ("outbound", "intake"),
        ("environments", "intake"),
        ("environments", "inbound"),
        ("environments", "outbound"),
        ("http", "store"),
        ("store", "http"),
        ("spec", "store"),
    ],
)
def test_named_rules_hold(source: str, forbidden: str) -> None:
    """The rules the README names, each on its own (the layer test implies them)."""
    found = [
        f"{module} imports {target}"
        for module, path in modules()
        if room(module) == source
        for target, _, _ in imports(path)
        if room(target) == forbidden
    ]
    assert not found, found
