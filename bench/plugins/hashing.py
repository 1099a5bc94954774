"""Source hashes of plug-ins: what makes an edited plug-in recompute what it computed, and only that.

A plug-in from a user folder or an installed package is keyed by the content of its file (:func:`plugin_source`);
built-in code is versioned by ``STAGE_VERSIONS`` instead, so the keys of built-ins stay stable across edits that do
not change results. A cell's hash and its record hold the hashes of the plug-ins that cell uses
(:func:`used_plugins`: its strategy and the weighting and fusion method its parameters name), so editing one plug-in
re-keys the cells that use it and no other.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.plugins.discovery import PACKAGE, builtin_dir
from bench.specs import PluginSpec

#: a strategy parameter whose name contains one of these names an entry of that registry (module, attribute)
NAMED = {"weighting": ("bench.weighting.base", "WEIGHTINGS"), "fusion": ("bench.fusion.base", "FUSIONS")}

_HASHES: dict[tuple[str, int], str] = {}  # (file, mtime) -> content hash: a file is read once per version


def file_hash(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes."""
    path = Path(path).resolve()
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return _HASHES[key]


def source_file(obj: Any) -> Path | None:
    """The file that defines ``obj`` (a class), or None (defined interactively)."""
    try:
        file = inspect.getsourcefile(obj)
    except TypeError:
        return None
    return Path(file) if file and Path(file).is_file() else None


def source_hash(obj: Any) -> str:
    """A content hash of the file that defines ``obj`` (a strategy, weighting or fusion class), "" when it has none."""
    file = source_file(obj)
    return file_hash(file) if file is not None else ""


def is_builtin(file: Path) -> bool:
    """Defined by bench itself: the package, or its built-in strategies folder (beside it in a checkout)."""
    file = Path(file).resolve()
    return any(root in file.parents for root in (PACKAGE, builtin_dir("strategies").resolve()))


def plugin_source(cls: type) -> str:
    """The version a record names for a class its cell used: a plug-in's source hash (a class from a user folder or
    an installed package); for a built-in, ``"v<N>"`` once its numbers changed on purpose (its ``version``
    ClassVar, e.g. MGDA's exact solver), else "" (built-ins are versioned by the code version). Either way a cell or
    stage that used another version is recomputed, not reused."""
    file = source_file(cls)
    if file is None or is_builtin(file):
        version = getattr(cls, "version", 1)
        return f"v{version}" if isinstance(version, int) and version > 1 else ""
    return file_hash(file)


def _named(params: Any, field: str = "") -> list[tuple[str, str, tuple[str, str]]]:
    """(kind, name, registry) of every plug-in that ``params`` names: a typed reference (:mod:`bench.specs`)
    anywhere, or a name in a field whose name contains ``weighting`` or ``fusion`` (a strategy of its own that types
    it as a plain ``str``), in nested models and lists too."""
    if isinstance(params, PluginSpec):
        return [(params.label, str(params), params.registry)]
    kind = next((k for k in NAMED if k in field), "")
    if isinstance(params, str):
        return [(kind, params, NAMED[kind])] if kind else []
    if isinstance(params, BaseModel):
        return [hit for f in type(params).model_fields for hit in _named(getattr(params, f), f)]
    if isinstance(params, (list, tuple)):
        return [hit for item in params for hit in _named(item, field)]
    return []


def used_plugins(strategy: type, params: Any) -> dict[str, str]:
    """``{"<kind>:<name>": source hash}`` of the user plug-ins a cell of ``strategy`` with ``params`` uses: the
    strategy and the weighting and fusion method its parameters name (built-ins are left out)."""
    out = {}
    if plugin_source(strategy):
        out[f"strategy:{strategy.name}"] = plugin_source(strategy)
    for kind, name, (module, attr) in _named(params):
        registry = getattr(importlib.import_module(module), attr)
        if name in registry:
            source = plugin_source(registry.get(name))
            if source:
                out[f"{kind}:{name}"] = source
    return dict(sorted(out.items()))


def changed_plugins(recorded: dict[str, str]) -> list[str]:
    """The ``"<kind>:<name>"`` entries of a record's ``plugins`` whose file is no longer the version it names (edited,
    or gone): a finished cell that used a plug-in its strategy names in code, not in its parameters (so not in the
    cell's hash), is recomputed rather than reused with the old version's results."""
    out = []
    for key, old in recorded.items():
        kind, _, name = key.partition(":")
        if kind not in NAMED:
            continue  # the strategy and the plug-ins its params name are in the cell hash already
        module, attr = NAMED[kind]
        registry = getattr(importlib.import_module(module), attr)
        if name not in registry or plugin_source(registry.get(name)) != old:
            out.append(key)
    return out
