"""The import graph of ``bench``: module-level cycles and function-local ``bench`` imports.

Run ``python scripts/import_graph.py`` from the repository root. It reads the syntax trees only (nothing is
imported), so it works on a broken tree too. A module-level import of ``bench.a.b`` counts as an edge to the module
``bench.a.b`` (or to the package ``bench.a`` when ``b`` is a name in it); an import inside a function or a
``TYPE_CHECKING`` block is not an edge, and a function-local one is listed, since it often dodges a cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def targets(node: ast.AST, here: str, is_pkg: bool, modules: set[str]) -> list[str]:
    out = []
    if isinstance(node, ast.Import):
        out = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = here.split(".") if is_pkg else here.split(".")[:-1]
            pkg = pkg[: len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        out = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return [t for t in out if t == "bench" or t.startswith("bench.")]


def is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    local: list[tuple[str, int, str]] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"

        def visit(node: ast.AST, top: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and is_type_checking(child):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for t in targets(child, mod, is_pkg, modules):
                        while t not in modules and "." in t:
                            t = t.rsplit(".", 1)[0]
                        if top:
                            if t != mod:
                                edges[mod].add(t)
                        else:
                            local.append((mod, child.lineno, t))
                inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, inner)

        visit(tree, True)
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in edges[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


if __name__ == "__main__":
    edges, local = graph()
    found = cycles(edges)
    # a package's __init__ re-exporting its children is an edge parent -> child; a child importing its parent
    # package's names is the other direction: both together are a cycle only through the __init__
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} module-level bench imports")
    print(f"import cycles: {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    local = sorted(set(local))
    statements = {(m, line) for m, line, _ in local}
    print(f"function-local bench imports: {len(statements)} statements in {len({m for m, _ in statements})} files")
    # one dodges a cycle when its target already reaches the importing module through module-level imports
    dodging = [(m, line, t) for m, line, t in local if t != m and m in reachable(edges, t)]
    print(f"function-local imports that dodge a cycle: {len(dodging)}")
    for mod, line, t in dodging:
        print(f"  {mod}:{line} -> {t}")
    if "-v" in sys.argv:
        for mod, line, t in local:
            print(f"  local {mod}:{line} -> {t}")
    sys.exit(1 if found or dodging else 0)
