"""What plug-in files register, read from their source without importing them (nor torch behind them).

A plug-in file (a strategy, weighting, fusion method, tracker, launcher, task kind or architecture in a plug-in
folder or an installed plug-in package) and the built-in modules of those kinds import the training stack at
their top (``from bench.stages import ...``, ``import torch``): importing them to learn a name costs seconds. This
module reads their syntax tree instead: every class decorated ``@register_strategy("name")`` (or
``register_weighting``, ``register_fusion``, ``register_architecture``, ...) gives an :class:`Entry`
with its name, the first line of its docstring and its file. A strategy's ``Params`` model is built by running only
the light part of its file: imports from the standard library, pydantic and bench's light modules
(:data:`LIGHT_BENCH`), module-level constants without calls, and the classes that need nothing else; so
``strategy.x=...`` is validated by the very pydantic model the strategy declares.

This is a pre-check, never the authority: ``bench run`` imports the plug-ins for real afterwards and validates
again. So a pre-check only ever errs on the safe side: a file whose registrations it cannot read (a ``register_*``
call that is not a decorator with a literal name, a syntax error) makes it skip the name checks of that kind
(:attr:`Scan.opaque`), and a ``Params`` it cannot build is checked after the import.

>>> scan = Scan.of()
>>> "naive_mtl" in scan.names("strategy") and "pcgrad" in scan.names("weighting")
True
>>> sorted(scan.params("naive_mtl").model_fields)[:3]
['architecture', 'architecture_params', 'epochs']
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.config import NoParams
from bench.errors import BenchError, unknown
from bench.plugins.discovery import (
    PACKAGE,
    distribution,
    module_files,
    origin,
    plugin_dirs,
    plugin_entry_points,
    where,
)

#: decorator -> the registry's kind, as its errors name it (``unknown weighting 'x'``)
KINDS = {"register_strategy": "strategy", "register_weighting": "weighting", "register_fusion": "fusion method",
         "register_tracker": "tracker", "register_launcher": "launcher", "register_task_kind": "task kind",
         "register_architecture": "architecture"}
#: the live registries of each kind (module, attribute), read when their module is already imported
LIVE = {"strategy": ("bench.strategy", "STRATEGIES"), "weighting": ("bench.weighting.base", "WEIGHTINGS"),
        "fusion method": ("bench.fusion.base", "FUSIONS"), "tracker": ("bench.track.base", "TRACKERS"),
        "launcher": ("bench.launch.base", "LAUNCHERS"), "task kind": ("bench.tasks.base", "TASK_KINDS"),
        "architecture": ("bench.architectures.base", "ARCHITECTURES")}
#: the package folders whose modules hold the built-in weightings, fusion methods, trackers, launchers, task kinds and
#: architectures
BUILTIN_FOLDERS = ("weighting", "fusion", "track", "launch", "tasks", "architectures")
#: bench modules that import nothing heavy: a plug-in's imports from these run when its Params is built
LIGHT_BENCH = ("bench.config", "bench.specs", "bench.errors", "bench.registry", "bench.strategy", "bench.suites",
               "bench.overrides", "bench.plugins", "bench.plugins.registry", "bench.plugins.discovery",
               "bench.plugins.hashing")
LIGHT_ROOTS = {"pydantic", "pydantic_core", "typing_extensions", "annotated_types", "yaml"}


@dataclass(frozen=True)
class Entry:
    """One registration found in a file: ``@register_<kind>(name)`` on class ``cls``."""

    kind: str
    name: str
    doc: str  # the first line of the class's docstring, as ``Registry.describe`` shows it
    file: Path
    cls: str


@dataclass
class FileMeta:
    """What one file registers; ``opaque`` says why its registrations cannot all be read ("" when they can)."""

    path: Path
    entries: list[Entry]
    opaque: str
    tree: ast.Module | None = field(default=None, repr=False)
    params: dict[str, Any] = field(default_factory=dict, repr=False)  # class -> its light Params (or None)
    namespace: dict[str, Any] | None = field(default=None, repr=False)  # what its light statements define


_FILES: dict[tuple[Path, int], FileMeta] = {}


def read(path: Path) -> FileMeta:
    """The registrations of ``path``, parsed once per version of the file."""
    path = Path(path).resolve()
    key = (path, path.stat().st_mtime_ns)
    if key not in _FILES:
        _FILES[key] = _read(path)
    return _FILES[key]


def _kind_of(call: ast.expr) -> str | None:
    fn = call.func if isinstance(call, ast.Call) else call
    name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
    return KINDS.get(name) if name else None


def _read(path: Path) -> FileMeta:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError) as e:
        return FileMeta(path, [], f"cannot parse {path}: {type(e).__name__}")
    entries: list[Entry] = []
    literal: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            kind = _kind_of(deco)
            if kind is None or not isinstance(deco, ast.Call):
                continue
            args = deco.args
            if len(args) == 1 and not deco.keywords and isinstance(args[0], ast.Constant) \
                    and isinstance(args[0].value, str):
                literal.add(id(deco))
                doc = (ast.get_docstring(node) or "").strip()
                entries.append(Entry(kind, args[0].value, doc.splitlines()[0] if doc else "", path, node.name))
    opaque = ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _kind_of(node) and id(node) not in literal:
            opaque = f"{path}:{node.lineno} registers a name that is not a literal decorator argument"
            break
    return FileMeta(path, entries, opaque, tree)


# --------------------------------------------------------------------------------------------- light Params


def _light_module(name: str) -> bool:
    root = name.split(".")[0]
    if root == "bench":
        return name in LIGHT_BENCH
    return root in LIGHT_ROOTS or root in sys.stdlib_module_names


_API: dict[str, str] = {}


def _api_names() -> dict[str, str]:
    """Name -> the module :mod:`bench.api` re-exports it from, read from its syntax tree (importing it would import
    the training stack): ``from bench.api import Frozen`` is as light as ``from bench.config import Frozen``."""
    if not _API:
        tree = ast.parse((PACKAGE / "api.py").read_text())
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.module:
                _API.update({alias.asname or alias.name: stmt.module for alias in stmt.names})
    return _API


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(n, (ast.Call, ast.Lambda, ast.NamedExpr, ast.Await)) for n in ast.walk(node))


def _light_namespace(meta: FileMeta) -> dict[str, Any]:
    """The names of ``meta``'s file that its light statements define (see the module's docstring)."""
    # a module of its own (pydantic resolves a model's string annotations through sys.modules[its __module__])
    name = f"bench_plugin_meta.{meta.path.stem}_{abs(hash(str(meta.path))) % 10**8}"
    module = types.ModuleType(name)
    module.__file__ = str(meta.path)
    sys.modules[name] = module
    ns = module.__dict__
    assert meta.tree is not None
    for stmt in meta.tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "bench.api":
            for alias in stmt.names:  # each name from the module that defines it, when that one is light
                source = _api_names().get(alias.name)
                if source is not None and _light_module(source):
                    value = getattr(importlib.import_module(source), alias.name, None)
                    if value is not None:
                        ns[alias.asname or alias.name] = value
            continue
        if isinstance(stmt, ast.ImportFrom):
            if stmt.module == "__future__" or stmt.level or not stmt.module or not _light_module(stmt.module):
                continue
            try:
                module = importlib.import_module(stmt.module)
            except ImportError:
                continue
            for alias in stmt.names:
                if alias.name != "*" and hasattr(module, alias.name):
                    ns[alias.asname or alias.name] = getattr(module, alias.name)
            continue
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if _light_module(alias.name):
                    try:
                        module = importlib.import_module(alias.name)
                    except ImportError:
                        continue
                    if alias.asname:
                        ns[alias.asname] = module
                    else:  # `import a.b` binds a
                        ns[alias.name.split(".")[0]] = sys.modules[alias.name.split(".")[0]]
            continue
        if isinstance(stmt, ast.ClassDef):
            if any(_kind_of(d) for d in stmt.decorator_list):
                continue  # a registered class: never defined (nor registered) by the pre-check
        elif not (isinstance(stmt, (ast.Assign, ast.AnnAssign)) and not _has_call(stmt)):
            continue
        try:
            exec(compile(ast.Module(body=[stmt], type_ignores=[]), str(meta.path), "exec"), ns)  # noqa: S102
        except Exception:  # noqa: BLE001 (it needs what was left out: the import decides)
            continue
    return ns


def _params_expr(meta: FileMeta, cls: str, seen: frozenset[str] = frozenset()) -> ast.expr | str | None:
    """The expression ``Params = ...`` of class ``cls`` (or of a base class in the same file); ``"none"`` when
    the class and its bases declare none (the Strategy default, no parameters); None when it cannot be told."""
    assert meta.tree is not None
    node = next((n for n in meta.tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    if node is None or cls in seen:
        return None
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "Params" for t in stmt.targets):
            return stmt.value
        if isinstance(stmt, ast.ClassDef) and stmt.name == "Params":
            return None  # a nested model: built with its class only (left to the import)
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id == "Strategy":
            continue
        if isinstance(base, ast.Name):
            return _params_expr(meta, base.id, seen | {cls})
        return None
    return "none"


def light_params(entry: Entry) -> type[BaseModel] | None:
    """The ``Params`` model of a registered strategy, built without importing its file; None when that cannot be
    done faithfully (the import decides then)."""
    meta = read(entry.file)
    if entry.cls not in meta.params:
        meta.params[entry.cls] = _build_params(meta, entry.cls)
    return meta.params[entry.cls]


def _build_params(meta: FileMeta, cls: str) -> type[BaseModel] | None:
    expr = _params_expr(meta, cls)
    if expr == "none":
        return NoParams
    if not isinstance(expr, (ast.Name, ast.Attribute)):
        return None
    if meta.namespace is None:
        meta.namespace = _light_namespace(meta)
    try:
        value = eval(compile(ast.Expression(expr), str(meta.path), "eval"), meta.namespace)  # noqa: S307 (a name lookup)
    except Exception:  # noqa: BLE001
        return None
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        return None
    if not value.__pydantic_complete__:  # an annotation that names something left out
        try:
            value.model_rebuild()
        except Exception:  # noqa: BLE001
            return None
    return value if value.__pydantic_complete__ else None


# --------------------------------------------------------------------------------------------- one scan


@dataclass
class Scan:
    """Every registration a command can see: the built-in weighting, fusion, tracker and launcher modules, the
    plug-in folders in :func:`bench.plugins.discovery.discover`'s order (a file name found earlier shadows a later
    one) and the modules of installed ``bench.plugins`` entry points."""

    entries: dict[str, dict[str, Entry]]
    opaque: dict[str, str]  # kind -> why its name list may be incomplete ("" or absent: it is complete)
    packages: dict[Path, str] = field(default_factory=dict)  # file of an entry point's module -> its distribution

    @classmethod
    def of(cls, extra: Iterable[str | Path] = ()) -> Scan:
        extra = [Path(e) for e in extra]
        for folder in extra:
            if not folder.is_dir():
                raise BenchError(f"plug-in folder {str(folder)!r} does not exist; fix plugin_dirs")
        files = [p for sub in BUILTIN_FOLDERS for p in sorted((PACKAGE / sub).rglob("*.py"))]
        seen: set[str] = set()
        helpers: list[Path] = []
        for folder in dict.fromkeys(p.resolve() for p in plugin_dirs(extra)):
            if not folder.is_dir():
                continue
            for file in sorted(folder.glob("*.py")):
                if file.name.startswith("_"):  # not imported by discover, but a plug-in may import it
                    helpers.append(file)
                elif file.name not in seen:
                    seen.add(file.name)
                    files.append(file)
        packages = {f.resolve(): distribution(ep) for ep in plugin_entry_points() for f in module_files(ep.module)}
        scan = cls({kind: {} for kind in LIVE}, {}, packages)
        for file in files + helpers + list(packages):
            meta = read(file)
            for e in meta.entries:
                scan.entries[e.kind].setdefault(e.name, e)
            if meta.opaque:
                for kind in LIVE:
                    scan.opaque.setdefault(kind, meta.opaque)
        return scan

    @staticmethod
    def live(kind: str) -> dict[str, Any]:
        """The registry of ``kind`` as this process already filled it (a test's in-process plug-ins), if imported;
        reading it imports nothing."""
        module, attr = LIVE[kind]
        reg = getattr(sys.modules.get(module), attr, None)
        return reg.loaded() if reg is not None else {}

    def names(self, kind: str) -> list[str]:
        return sorted({*self.entries[kind], *self.live(kind)})

    def check_name(self, kind: str, name: Any, hint: str = "") -> None:
        """The registry's own one-line error for an unknown ``name``, when the name list is known to be complete."""
        if not isinstance(name, str) or self.opaque.get(kind):
            return
        names = self.names(kind)
        if name not in names:
            err = unknown(kind, name, names)
            raise BenchError(f"{err}{hint}") if hint else err

    def params(self, strategy: str) -> type[BaseModel] | None:
        """A strategy's ``Params``: the registered class's where it is imported already, else built lightly."""
        live = self.live("strategy").get(strategy)
        if live is not None:
            return live.Params
        entry = self.entries["strategy"].get(strategy)
        return light_params(entry) if entry is not None else None

    def origin(self, kind: str, name: str) -> str:
        """Where an entry was defined, as ``bench list`` shows it: ``built-in``, ``./strategies``, a
        ``plugin_dirs`` folder, or the distribution (name and version) of an installed plug-in package."""
        entry = self.entries[kind].get(name)
        if entry is None:
            return origin(self.live(kind).get(name))
        if entry.file in self.packages:
            return self.packages[entry.file]
        return "built-in" if entry.file.is_relative_to(PACKAGE) else where(entry.file, "strategies")

    def describe(self, kind: str) -> dict[str, str]:
        """name -> the first line of its docstring, like :meth:`bench.plugins.registry.Registry.describe`."""
        out = {n: e.doc for n, e in self.entries[kind].items()}
        for n, obj in self.live(kind).items():
            if n not in out:
                doc = (getattr(obj, "__doc__", None) or "").strip()
                out[n] = doc.splitlines()[0] if doc else ""
        return dict(sorted(out.items()))
