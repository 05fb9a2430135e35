"""DESIGN.md "no import circles" for the simulator and the conformance runner: every import counts, including
those inside functions and under ``TYPE_CHECKING`` (a circle a type checker or a refactoring trips over is still a
circle). The shared types live in ``simulator/host.py`` and ``conformance/context.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def _imports(package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((GATEWAY / package).glob("*.py")):
        mod = f"gateway.{package}.{path.stem}"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                deps.update(n for n in names if n.startswith(f"gateway.{package}."))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith(f"gateway.{package}."))
        graph[mod] = {d for d in deps if d != mod and (GATEWAY / package / f"{d.rsplit('.', 1)[1]}.py").exists()}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


@pytest.mark.parametrize("package", ["simulator", "conformance"])
def test_no_import_circles(package: str) -> None:
    graph = _imports(package)
    assert graph, package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_checker_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
