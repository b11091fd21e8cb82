"""Package layout checker: which gateway/drivers module may import which, and no import cycles.

The source is read with ``ast``; nothing is imported, so the check runs on a tree that does not
import (half-way through a move) and on synthetic trees in tests.

The rules (module paths are prefixes on whole dotted components: ``gateway.iec104`` covers
``gateway.iec104.asdus`` but not ``gateway.config.iec104``):

1. core (every ``gateway`` module outside ``gateway.iec104``, ``gateway.northbound`` and
   ``gateway.commissioning``; ``gateway.simulation`` counts as core) imports no protocol library
   (``c104``, ``pymodbus``, ``asyncua``, ``serial``, ``hat``), no module of those three packages
   and nothing under ``drivers``.
2. a module under ``drivers.<a>`` imports no ``drivers.<b>`` (b != a), no ``gateway.northbound``
   and no ``gateway.commissioning`` (gateway core and ``gateway.iec104`` are fine).
3. the runtime (everything outside ``gateway.commissioning``) imports no ``gateway.commissioning``;
   ``gateway.northbound`` imports only ``gateway.iec104`` and core of the project (no driver);
   ``gateway.commissioning`` imports no driver.
4. no import cycle between modules. ``if TYPE_CHECKING:`` imports are left out of the graph
   (they never run); imports inside functions are in it.

Every import statement counts for rules 1-3, wherever it is (function bodies and
``if TYPE_CHECKING:`` blocks included), except the entries of ``EXCEPTIONS``. An import is
reported once, under the first of rules 1-3 it breaks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("gateway", "drivers")

PROTOCOL_LIBRARIES = ("c104", "pymodbus", "asyncua", "serial", "hat")
IEC104 = "gateway.iec104"
NORTHBOUND = "gateway.northbound"
COMMISSIONING = "gateway.commissioning"
PROTOCOL_PACKAGES = (IEC104, NORTHBOUND, COMMISSIONING)

# The only exception to rules 1 and 3, as (importing module, imported package prefixes): imports
# inside a function body of gateway/cli.py may reach gateway.commissioning, because the CLI
# dispatches commissioning subcommands to it and imports each one only when it is run, so the
# gateway started by ``gridgate run`` never loads them (tests/unit/test_layout.py checks that at
# run time too). A module-level import in cli.py is not exempt, nor is a function-level import of
# anything else (gateway.northbound, gateway.iec104, drivers, libraries).
EXCEPTIONS: dict[str, tuple[str, ...]] = {"gateway.cli": (COMMISSIONING,)}

RULE_CORE = "core imports no protocol package"
RULE_DRIVER = "a driver imports only its own package, gateway core and gateway.iec104"
RULE_RUNTIME = "the runtime imports no gateway.commissioning"
RULE_NORTHBOUND = "gateway.northbound imports only gateway.iec104 and core, no driver"
RULE_COMMISSIONING = "gateway.commissioning imports no driver"
RULE_CYCLE = "no import cycle"


@dataclass(frozen=True)
class Import:
    """One imported module: its absolute dotted name and where the statement is."""

    module: str
    line: int
    in_function: bool
    type_checking: bool


def under(module: str, prefix: str) -> bool:
    """Whether ``module`` is ``prefix`` or inside it, on whole dotted components."""
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    """``gateway/config/__init__.py`` -> ``gateway.config``; ``gateway/cli.py`` -> ``gateway.cli``."""
    parts = list(path.resolve().relative_to(root.resolve()).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> list[Path]:
    """Every .py file under the scanned top-level packages of ``root``."""
    return sorted(p for top in SCANNED for p in (root / top).rglob("*.py") if p.is_file())


def is_module(name: str, root: Path) -> bool:
    """Whether dotted ``name`` is a module file or a package directory inside ``root``."""
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, root: Path) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.root = root
        self.found: list[Import] = []
        self.in_function = 0
        self.type_checking = 0

    def _add(self, module: str, node: ast.stmt) -> None:
        self.found.append(Import(module, node.lineno, self.in_function > 0, self.type_checking > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.in_function += 1
        self.generic_visit(node)
        self.in_function -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self.type_checking += 1
        for stmt in node.body:
            self.visit(stmt)
        self.type_checking -= 1
        for stmt in node.orelse:  # the else branch is what runs
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".") if self.package else []
            if node.level - 1 > len(base) or (node.level - 1 == len(base) and not node.module):
                return  # beyond the top-level package: Python refuses it too
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if not source:
            return
        whole_source = False
        for alias in node.names:
            if alias.name != "*" and is_module(f"{source}.{alias.name}", self.root):
                self._add(f"{source}.{alias.name}", node)  # `from pkg import submodule`
            elif not whole_source:
                whole_source = True
                self._add(source, node)


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every module the file imports, in source order, relative imports made absolute.

    ``from pkg import name`` is an import of ``pkg.name`` when that is a module or package in
    ``root``, else of ``pkg``. Raises SyntaxError when the file does not parse.
    """
    tree = ast.parse(path.read_bytes(), filename=str(path))
    collector = _Collector(module_name(path, root), path.name == "__init__.py", root)
    collector.visit(tree)
    return collector.found


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of ``graph`` that has one, as a closed path.

    The cycle starts at the component's smallest node and is a shortest way back to it, e.g.
    ``["a", "b", "c", "a"]``. Edges to nodes not in ``graph`` and self-edges are ignored.
    Iterative Tarjan, so deep graphs do not hit the recursion limit.
    """
    nodes = sorted(graph)
    edges = {n: sorted({m for m in graph[n] if m in graph and m != n}) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                nxt = edges[node][child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:  # back in the caller: pass the low-link up
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
                    components.append(sorted(component))
    found = [_shortest_cycle(component, edges) for component in components]
    return sorted(found)


def _shortest_cycle(component: list[str], edges: Mapping[str, list[str]]) -> list[str]:
    members = set(component)
    first = component[0]
    came_from: dict[str, str] = {}
    queue = [first]
    for node in queue:  # breadth first, inside the component
        for nxt in edges[node]:
            if nxt not in members:
                continue
            if nxt == first:
                path = [node]
                while path[-1] != first:
                    path.append(came_from[path[-1]])
                return [*reversed(path), first]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{component} is not strongly connected")  # pragma: no cover


def _rule_broken(module: str, imp: Import) -> tuple[str, str] | None:
    """(who, rule) for the first of rules 1-3 the import breaks, else None."""
    target = imp.module
    exempt = imp.in_function and any(under(target, p) for p in EXCEPTIONS.get(module, ()))
    if exempt:
        return None
    if under(module, "gateway") and not any(under(module, p) for p in PROTOCOL_PACKAGES):
        if (target.split(".")[0] in PROTOCOL_LIBRARIES or under(target, "drivers")
                or any(under(target, p) for p in PROTOCOL_PACKAGES)):
            return "core", RULE_CORE
    if under(module, "drivers"):
        own = module.split(".")[:2]
        if under(target, "drivers") and len(own) == 2 and target.split(".")[:2] != own \
                and target != "drivers":
            return "driver", RULE_DRIVER
        if under(target, NORTHBOUND) or under(target, COMMISSIONING):
            return "driver", RULE_DRIVER
    if not under(module, COMMISSIONING) and under(target, COMMISSIONING):
        return "runtime", RULE_RUNTIME
    if under(module, NORTHBOUND) and under(target, "drivers"):
        return "northbound", RULE_NORTHBOUND
    if under(module, COMMISSIONING) and under(target, "drivers"):
        return "commissioning", RULE_COMMISSIONING
    return None


def scan(root: Path) -> tuple[dict[Path, list[Import]], list[str]]:
    """The imports of every scanned file, and one message per file that does not parse."""
    found: dict[Path, list[Import]] = {}
    broken: list[str] = []
    for path in source_files(root):
        try:
            found[path] = imports_of(path, root)
        except FileNotFoundError:
            continue  # moved away since the listing (the tree is being reorganised)
        except SyntaxError as exc:
            found[path] = []
            broken.append(f"{_rel(path, root)}:{exc.lineno or 0}: does not parse: {exc.msg} "
                          f"(rule: source parses)")
    return found, broken


def import_graph(found: Mapping[Path, list[Import]], root: Path) -> dict[str, dict[str, tuple[Path, int]]]:
    """module -> {imported project module: (file, first line)}, ``if TYPE_CHECKING:`` left out.

    Nodes are the scanned files; an import of a package is an edge to its ``__init__``; an
    import of a name that is no file in the tree (a broken import) is no edge.
    """
    modules = {module_name(path, root): path for path in found}
    graph: dict[str, dict[str, tuple[Path, int]]] = {m: {} for m in modules}
    for path, imports in found.items():
        me = module_name(path, root)
        for imp in imports:
            if imp.type_checking or imp.module == me or imp.module not in modules:
                continue
            edge = graph[me].get(imp.module)
            if edge is None or imp.line < edge[1]:
                graph[me][imp.module] = (path, imp.line)
    return graph


def _rel(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def violations(root: Path = ROOT) -> list[str]:
    """Every broken rule in the tree at ``root``, one line each: ``file:line: what (rule: ...)``."""
    found, messages = scan(root)
    for path, imports in found.items():
        me = module_name(path, root)
        for imp in imports:
            broken = _rule_broken(me, imp)
            if broken:
                who, rule = broken
                where = " (inside a function)" if imp.in_function else ""
                where += " (under TYPE_CHECKING)" if imp.type_checking else ""
                messages.append(f"{_rel(path, root)}:{imp.line}: {who} imports {imp.module}{where} "
                                f"(rule: {rule})")
    graph = import_graph(found, root)
    for cycle in cycles(graph):
        first_path, first_line = graph[cycle[0]][cycle[1]]
        steps = ", ".join(f"{_rel(graph[a][b][0], root)}:{graph[a][b][1]} imports {b}"
                          for a, b in zip(cycle, cycle[1:]))
        messages.append(f"{_rel(first_path, root)}:{first_line}: import cycle {' -> '.join(cycle)} "
                        f"[{steps}] (rule: {RULE_CYCLE})")
    return messages
