"""Where plug-ins come from, and importing them: the built-in folders, ``./strategies``, ``plugin_dirs=[...]``
folders and installed packages that declare a ``bench.plugins`` entry point.

A plug-in is a Python file that registers what it defines (``@register_strategy``, ``@register_weighting``,
``@register_fusion``, ``@register_tracker``, ``@register_launcher``, ``@register_task_kind``). Files are found in
the plug-in folders, in this order: ``./strategies`` of the working directory, the ``plugin_dirs=[...]`` folders,
the built-in strategies; a file name found earlier shadows the same name later (a user's ``naive_mtl.py`` replaces
the built-in one). A package installed with pip adds plug-ins with no flag by declaring an entry point whose value
names a module::

    [project.entry-points."bench.plugins"]
    my_methods = "bench_my_methods.weightings"

:func:`discover` imports both once per process. :func:`origin` tells where a registered class came from, as
``bench list`` shows it, and :func:`where_raised` turns a plug-in's exception into one line with its file and line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from bench.errors import BenchError

PACKAGE = Path(__file__).resolve().parents[1]  # the bench package
GROUP = "bench.plugins"  # the entry-point group of installed plug-in packages
#: what an unknown name of a plug-in kind adds to its one-line error
HINT = "; a plug-in needs its folder in plugin_dirs=[folder] (or its package installed)"


def builtin_dir(kind: str) -> Path:
    """The built-in ``suites`` or ``strategies`` folder: ``bench/_builtin/<kind>`` in an installed wheel, the top-level
    ``<kind>/`` folder beside the package in a source checkout (an editable install or ``PYTHONPATH``)."""
    installed = PACKAGE / "_builtin" / kind
    return installed if installed.is_dir() else PACKAGE.parent / kind


def user_dirs(kind: str, extra: Iterable[str | Path] = ()) -> list[Path]:
    """``./<kind>`` of the working directory (when it exists and is not the built-in folder), then ``extra``."""
    cwd = Path.cwd() / kind
    first = [cwd] if cwd.is_dir() and cwd.resolve() != builtin_dir(kind).resolve() else []
    return first + [Path(e) for e in extra]


def where(path: Path, kind: str) -> str:
    """Where a suite or plug-in file was found, for ``bench list``: ``built-in``, ``./suites`` or its folder."""
    folder = path.resolve().parent
    if folder == builtin_dir(kind).resolve() or folder.is_relative_to(PACKAGE):
        return "built-in"
    try:
        return f"./{folder.relative_to(Path.cwd().resolve())}"
    except ValueError:
        return str(folder)


def plugin_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Every plug-in folder in search order: ``./strategies``, the ``plugin_dirs=[...]`` folders, the built-ins.
    Given to :func:`bench.search.space.load_space`, the same order holds for search spaces
    (``<folder>/spaces/*.yaml``)."""
    return [*user_dirs("strategies", extra), builtin_dir("strategies")]


def default_dirs() -> list[Path]:
    """``./strategies`` of the working directory (when it exists), then the built-in strategies."""
    return plugin_dirs()


def check_folders(extra: Iterable[str | Path]) -> list[Path]:
    """The ``plugin_dirs=`` folders as paths; one that does not exist is a one-line error."""
    folders = [Path(e) for e in extra]
    for folder in folders:
        if not folder.is_dir():
            raise BenchError(f"plug-in folder {str(folder)!r} does not exist; fix plugin_dirs")
    return folders


def plugin_files(extra: Iterable[str | Path] = ()) -> list[tuple[Path, Path]]:
    """(folder, file) of every plug-in file :func:`discover` imports, in order: ``*.py`` not starting with ``_``,
    a file name found in an earlier folder shadowing the same name later."""
    seen: set[str] = set()
    out = []
    for folder in dict.fromkeys(p.resolve() for p in plugin_dirs(check_folders(extra))):
        for file in sorted(folder.glob("*.py")) if folder.is_dir() else []:
            if not file.name.startswith("_") and file.name not in seen:
                seen.add(file.name)
                out.append((folder, file))
    return out


# ------------------------------------------------------------------------------------------------ entry points


def plugin_entry_points() -> list[EntryPoint]:
    """The ``bench.plugins`` entry points of the installed distributions, by name."""
    return sorted(entry_points(group=GROUP), key=lambda ep: ep.name)


def distribution(ep: EntryPoint) -> str:
    """``"bench-my-methods 0.1.0"``: the distribution that declares ``ep``, as ``bench list`` names it."""
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else f"entry point {ep.name}"


def module_files(module: str) -> list[Path]:
    """The source files of ``module`` (every ``*.py`` of a package), found without importing it."""
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0]) if parts[0] not in sys.modules else sys.modules[parts[0]].__spec__
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.origin:
        return []
    path = Path(spec.origin)
    for part in parts[1:]:
        base = path.parent / part
        path = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
    if not path.is_file():
        return []
    return sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]


# ------------------------------------------------------------------------------------------------ importing

_loaded: set[Path] = set()  # plug-in files imported by this process
_shadows: set[str] = set()  # names of the user files imported: the built-in file of the same name is not
_entry_modules: set[str] = set()  # entry-point modules imported by this process
_packages: dict[str, str] = {}  # top-level package of an entry point's module -> its distribution (for origin)


def discover(extra: Iterable[str | Path] = ()) -> None:
    """Import every plug-in file (:func:`plugin_files`) and every ``bench.plugins`` entry point once, which
    registers what they define. A file or package that fails to import stops the command with one line naming it."""
    builtin = builtin_dir("strategies").resolve()
    for folder, file in plugin_files(extra):
        path = file.resolve()
        if path in _loaded or (folder == builtin and file.name in _shadows):
            continue  # imported already, or a built-in that a user's file of the same name replaced
        if folder != builtin:
            _shadows.add(file.name)
        name = f"bench_strategies.{file.stem}_{abs(hash(str(path))) % 10**8}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _loaded.add(path)
        try:
            spec.loader.exec_module(module)
        except BenchError as e:  # e.g. a name another plug-in registered
            _loaded.discard(path)
            _shadows.discard(file.name)
            raise BenchError(f"plug-in {file}: {e}") from None
        except Exception as e:  # noqa: BLE001 (a plug-in's bug: one line, before any work)
            _loaded.discard(path)
            _shadows.discard(file.name)
            raise BenchError(f"plug-in {file} failed to import: {where_raised(e, path)}; fix it or move it out "
                             f"of {folder}") from None
    for ep in plugin_entry_points():
        if ep.module in _entry_modules:
            continue
        _entry_modules.add(ep.module)
        _packages[ep.module.split(".")[0]] = distribution(ep)
        try:
            importlib.import_module(ep.module)
        except Exception as e:  # noqa: BLE001 (a package's clash or bug: one line, before any work)
            _entry_modules.discard(ep.module)
            if isinstance(e, BenchError):
                raise BenchError(f"plug-in package {distribution(ep)} ({ep.module}): {e}") from None
            raise BenchError(f"plug-in package {distribution(ep)} failed to import {ep.module}: {where_raised(e)}; "
                             f"fix it or pip uninstall {ep.dist.name if ep.dist else ep.module}") from None


def origin(obj: Any) -> str:
    """Where a registered class was defined, for ``bench list``: ``built-in`` (the package or its built-in
    strategies), ``./strategies``, the ``plugin_dirs`` folder of its file, or the distribution of its entry point."""
    module = getattr(obj, "__module__", "") or ""
    if module.split(".")[0] in _packages:
        return _packages[module.split(".")[0]]
    file = getattr(sys.modules.get(module), "__file__", None)
    return where(Path(file), "strategies") if file else "built-in"


def where_raised(err: BaseException, near: Path | None = None) -> str:
    """``"ZeroDivisionError: division by zero (at strategies/mine.py:12)"``: an exception as one line, with the
    innermost frame of ``near`` (a plug-in file), else the innermost frame outside this package."""
    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, SyntaxError) and err.filename:
        frames.append(traceback.FrameSummary(err.filename, err.lineno or 0, "<module>"))
    pick = [f for f in frames if near is not None and Path(f.filename).resolve() == Path(near).resolve()]
    if not pick:
        pick = [f for f in frames if not str(Path(f.filename).resolve()).startswith(str(PACKAGE))] or frames
    at = f" (at {pick[-1].filename}:{pick[-1].lineno})" if pick else ""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}{at}" if text else f"{type(err).__name__}{at}"


def shadows(new: str, old: str) -> bool:
    """Whether a class from file ``new`` may replace one registered from ``old``: a user's plug-in file replacing the
    built-in strategy file of the same name (the shadowing rule of :func:`plugin_files`)."""
    if not new or not old or Path(new).name != Path(old).name:
        return False
    builtin = builtin_dir("strategies").resolve()
    return Path(old).resolve().parent == builtin and Path(new).resolve().parent != builtin
