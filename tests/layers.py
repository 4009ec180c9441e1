"""Layer checks that import-linter's contracts (pyproject.toml) do not cover.

- **Runtime import cycles** among the modules of ``recsvc``, ``training`` and
  ``feature_store``. Every import that can run counts: module level, class bodies and
  imports inside functions alike; only ``if TYPE_CHECKING:`` blocks are left out (they
  never run). A function-level import that closes a cycle does not make the modules
  independent, it only postpones the import, so such a cycle is reported too, with the
  deferred step marked "in a function". Imports inside functions are what keeps a cycle
  from failing at import time, so a check of module-level imports alone would find none.
- **training is loaded lazily**: a ``recsvc`` module (in practice ``recsvc.commands.*`` and
  ``recsvc.cli``; import-linter forbids the rest any import of it) imports ``training`` only
  inside a function, so ``recsvc serve`` never loads the training stack.

``python -m tests.layers [ROOT]`` prints one line per problem and exits 1 (0 when clean);
``make lint`` runs it. :func:`problems` runs both checks on any source tree (tests/test_layers.py).
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("recsvc", "training", "feature_store")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # a module of the checked packages, or the external name as written
    path: Path
    line: int
    when: str  # "module": runs on import; "function": when called; "typing": never


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the checked packages."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], when: str) -> Iterator[tuple[ast.stmt, str]]:
    """Every statement under ``body`` with when it runs (see :class:`Import`)."""
    for node in body:
        yield node, when
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _statements(node.body, "typing" if when == "typing" else "function")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, "typing")
            yield from _statements(node.orelse, when)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, None) or []:
                    if isinstance(child, ast.stmt):
                        yield from _statements([child], when)
                    elif hasattr(child, "body"):  # except handlers, match cases
                        yield from _statements(child.body, when)


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The imports in one file; ``from pkg import name`` points at ``pkg.name`` when that is
    a module, else at ``pkg`` (whose ``__init__`` defines the name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node, when in _statements(tree.body, "module"):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        for target in dict.fromkeys(targets):
            found.append(Import(module, target, path, node.lineno, when))
    return found


def all_imports(root: Path) -> tuple[list[Import], list[str]]:
    """Every import of the checked packages, and one line per file that does not parse."""
    modules = module_files(root)
    found: list[Import] = []
    unreadable: list[str] = []
    for name, path in modules.items():
        try:
            found += imports_of(name, path, modules)
        except SyntaxError as exc:
            unreadable.append(f"{path.relative_to(root)}:{exc.lineno}: cannot parse: {exc.msg}")
    return found, unreadable


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan) with more than one module or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def import_cycles(imports: list[Import]) -> list[tuple[list[str], list[str]]]:
    """(cycle, tangle) per group of modules that import each other through imports that can
    run: ``cycle`` is one of the group's shortest cycles [m0, m1, ..., m0], ``tangle`` the
    whole group (breaking ``cycle`` may leave another cycle in it)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.when != "typing":
            graph.setdefault(i.importer, set()).add(i.imported)
    found = []
    for component in _components(graph):
        members = set(component)
        best: list[str] = []
        for start in component:
            cycle = _shortest_cycle(graph, members, start)
            if cycle and (not best or len(cycle) < len(best)):
                best = cycle
        found.append((best, component))
    return found


def _shortest_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside ``members`` (breadth first)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, set()) & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    return []


def problems(root: Path = ROOT) -> list[str]:
    """One line per import cycle, per module-level import of training by recsvc and per
    file that does not parse."""
    imports, lines = all_imports(root)
    where: dict[tuple[str, str], Import] = {}
    for i in imports:  # per pair, the module-level import if there is one, else the first
        pair = (i.importer, i.imported)
        if i.when == "typing":
            continue
        if pair not in where or (i.when == "module" and where[pair].when != "module"):
            where[pair] = i
    for cycle, tangle in import_cycles(imports):
        steps = [where[pair] for pair in itertools.pairwise(cycle)]
        at = ", ".join(f"{s.path.relative_to(root)}:{s.line}{_deferred(s)}" for s in steps)
        line = f"import cycle: {' -> '.join(cycle)} ({at})"
        others = [m for m in tangle if m not in cycle]
        if others:
            line += f"; also in cycles with them: {', '.join(others)}"
        lines.append(line)
    for i in imports:
        top = i.imported.split(".")[0]
        if i.when == "module" and i.importer.split(".")[0] == "recsvc" and top == "training":
            lines.append(
                f"{i.path.relative_to(root)}:{i.line}: {i.importer} imports {i.imported} at "
                "module level (recsvc may import training only inside a function)"
            )
    return lines


def _deferred(i: Import) -> str:
    return " in a function" if i.when == "function" else ""


def main(argv: list[str]) -> int:
    found = problems(Path(argv[0]) if argv else ROOT)
    for line in found:
        print(line)
    if found:
        print(f"layers: {len(found)} problem(s)", file=sys.stderr)
        return 1
    print("layers: no import cycles; recsvc imports training only inside functions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
