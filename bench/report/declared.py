"""What the plug-in files declare about rows, read from their source without importing them: the fallback of
:mod:`bench.report.style` for records older than schema 3, whose rows do not describe themselves.

For each strategy the scan (:class:`bench.plugins.scan.Scan`) finds, its class attributes ``rows``, ``colours`` and
``families`` (literals in the class body, or in a base class of the same file) and the default of its ``weighting``
parameter; for each weighting, its ``family`` (through its base classes, in its own file or in the built-in
``bench/weighting`` modules). A strategy or weighting this process has already imported (a test's in-process
plug-in) is read from the class itself. A folder that does not exist, or a file that cannot be read, only leaves
its rows undeclared: a report never fails on a plug-in.

>>> kinds = declared_kinds(())
>>> kinds["fused"].strategy, kinds["fused"].family, kinds["naive_mtl"].weighting
('fuse_then_joint', 'fusion', 'equal')
>>> weighting_families(())["pcgrad"], weighting_families(())["equal"]
('gradient', 'loss')
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, NamedTuple

from bench.config import DEFAULT_STRATEGIES
from bench.errors import BenchError
from bench.plugins.scan import Scan, read
from bench.record import strategy_rank

ROW_ATTRS = ("rows", "colours", "families")
WEIGHTING_MODULES = Path(__file__).resolve().parents[1] / "weighting"  # the built-in Balancer classes


class Declared(NamedTuple):
    """One row kind as its strategy declares it."""

    rank: int  # the strategy's place in DEFAULT_STRATEGIES; len(DEFAULT_STRATEGIES) for any other
    strategy: str
    row: int  # the kind's place in the strategy's rows
    colour: str | None
    family: str | None
    weighting: str | None  # the default of the strategy's ``weighting`` parameter, if it has one


def default_weighting(params: Any) -> str | None:
    """The default of a ``Params`` model's ``weighting`` field, as a name (a spec object gives its ``name``)."""
    field = getattr(params, "model_fields", {}).get("weighting")
    value = getattr(field.default, "name", field.default) if field is not None else None
    return value if isinstance(value, str) else None


def _classes(files: list[Path]) -> dict[str, tuple[Path, ast.ClassDef]]:
    out: dict[str, tuple[Path, ast.ClassDef]] = {}
    for file in files:
        tree = read(file).tree
        for node in tree.body if tree is not None else []:
            if isinstance(node, ast.ClassDef):
                out.setdefault(node.name, (file, node))
    return out


def _literal_attrs(file: Path, cls: str, names: tuple[str, ...], known: dict[str, tuple[Path, ast.ClassDef]],
                   seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The literal class attributes ``names`` of class ``cls`` in ``file``, looked up through its bases (a base in
    the same file first, else one of ``known``), the class's own value first."""
    own = _classes([file])
    found = own.get(cls) or known.get(cls)
    if found is None or cls in seen:
        return {}
    file, node = found
    out: dict[str, Any] = {}
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) \
            else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names and stmt.value is not None:
                try:
                    out.setdefault(target.id, ast.literal_eval(stmt.value))
                except ValueError:
                    continue
    for base in node.bases:
        if isinstance(base, ast.Name):
            for key, value in _literal_attrs(file, base.id, names, known, seen | {cls}).items():
                out.setdefault(key, value)
    return out


def _scan(dirs: tuple[str, ...]) -> Scan | None:
    try:
        return Scan.of(list(dirs))
    except BenchError:
        return None  # a folder that does not exist: the records still report, without these declarations


def declared_kinds(dirs: tuple[str, ...]) -> dict[str, Declared]:
    """Row kind -> what the strategy that declares it says (the first strategy in table order wins a clash).

    Read afresh on every call (:meth:`bench.report.style.Styles.of` calls it once per report), so an edited plug-in
    file or one registered in-process since is seen."""
    scan = _scan(dirs)
    if scan is None:
        return {}
    names = scan.names("strategy")
    order = [n for n in DEFAULT_STRATEGIES if n in names] + [n for n in names if n not in DEFAULT_STRATEGIES]
    live = Scan.live("strategy")
    kinds: dict[str, Declared] = {}
    for name in order:
        if name in live:
            cls = live[name]
            attrs = {"rows": cls.row_names(), "colours": cls.colours, "families": getattr(cls, "families", {})}
        else:
            entry = scan.entries["strategy"][name]
            attrs = _literal_attrs(entry.file, entry.cls, ROW_ATTRS, {})
        params = scan.params(name)
        for j, row in enumerate(attrs.get("rows") or (name,)):
            kinds.setdefault(row, Declared(strategy_rank(name), name, j, (attrs.get("colours") or {}).get(row),
                                           (attrs.get("families") or {}).get(row), default_weighting(params)))
    return kinds


def weighting_families(dirs: tuple[str, ...]) -> dict[str, str]:
    """Weighting name -> the family it declares (``Balancer.family``)."""
    scan = _scan(dirs)
    if scan is None:
        return {}
    known = _classes(sorted(WEIGHTING_MODULES.rglob("*.py")))
    out = {}
    for name, entry in scan.entries["weighting"].items():
        family = _literal_attrs(entry.file, entry.cls, ("family",), known).get("family")
        if isinstance(family, str):
            out[name] = family
    for name, cls in Scan.live("weighting").items():
        if isinstance(getattr(cls, "family", None), str):
            out[name] = cls.family
    return out
