"""The Strategy interface, its registry, and discovery of strategy files.

A strategy is one Python file under ``strategies/`` (or any folder named by ``strategy_dirs=[...]``) holding a class
registered with :func:`register_strategy`. It declares its knobs as a frozen pydantic ``Params`` model and composes
stages in :meth:`Strategy.run`, returning one leaderboard row per variant it produced.

Example (a complete strategy file):

    from bench.config import Frozen
    from bench.stages import Stages, make_row
    from bench.strategy import Strategy, register_strategy

    class Params(Frozen):
        weighting: str = "equal"

    @register_strategy("joint_from_scratch")
    class JointFromScratch(Strategy):
        '''Joint training from θ0 with any weighting.'''
        Params = Params

        def run(self, stages: Stages, params: Params) -> dict:
            joint = stages.joint(weighting=params.weighting)
            return {"joint_from_scratch": make_row(joint)}
"""

from __future__ import annotations

import importlib.util
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.config import Frozen, NoParams, validated
from bench.errors import BenchError
from bench.registry import Registry

if TYPE_CHECKING:  # annotations only: the interface imports no torch, so names and Params are read before it
    from bench.stages import Stages, SuiteContext


class Strategy(ABC):
    """How a strategy obtains its weights. ``run`` returns ``{variant: row}`` (see :func:`bench.stages.make_row`).

    A strategy is a plug-in: the core never names one. What the report needs to draw its rows it declares here:
    ``rows`` (the variants ``run`` returns, in the order the leaderboard lists them; default: one row named like
    the strategy), ``colours`` (row -> a colour for plots; rows without one get a stable colour from the
    palette) and ``families`` (row -> the family the report's figures group and colour it by: ``baseline``,
    ``fusion``, ``loss``, ``gradient``, or a name of the plug-in's own). A row whose family depends on the weighting
    it trained with is left out of ``families``: it then takes the ``family`` of the weighting in its name
    (``naive_mtl[weighting=pcgrad]``: ``gradient``), else of the default of the strategy's ``weighting`` parameter
    (docs/figures.md). Where rows sit among strategies follows ``DEFAULT_STRATEGIES`` in :mod:`bench.config`, then
    names.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[Frozen]] = NoParams
    rows: ClassVar[tuple[str, ...]] = ()
    colours: ClassVar[dict[str, str]] = {}
    families: ClassVar[dict[str, str]] = {}
    #: what a cell stores, for the free-space estimate before a run: whether it trains the per-task fine-tunes
    #: (shared by every strategy that does) and how many checkpoints of its own it writes
    uses_finetunes: ClassVar[bool] = True
    own_checkpoints: ClassVar[int] = 2
    #: search space ``mode:`` -> the row a trial of that mode scores (``mode: train`` scores the strategy's own row
    #: unless the space names one); a mode the strategy does not list is refused for it
    search_rows: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def run(self, stages: Stages, params: Any) -> dict[str, Any]:
        """Compose stages; return one row per variant (e.g. ``{"fused": ..., "fuse_then_joint": ...}``)."""

    @classmethod  # noqa: B027 (an optional hook)
    def check(cls, params: Any, tasks: list[str]) -> None:
        """Optional: fail with one line (a ``BenchError``) at planning time, before any data is loaded, given the
        parsed params and the suite's task names (the tasks the run will train: absent optional tasks are already
        left out). E.g. a static λ with the wrong number of values, an unknown fusion method."""

    def check_suite(self, params: Any, ctx: SuiteContext) -> None:  # noqa: B027 (an optional hook)
        """Optional: fail with one line (a ``BenchError``) before any stage of the run is computed, given the loaded
        suite (``ctx.tasks``: the task configs, ``ctx.template``: the backbone), e.g. a fusion method that needs
        linear layers or class predictions. Runs once per variant, after the data is loaded."""

    def search_row(self, stages: Stages, params: Any, row: str | None = None) -> Any:
        """The row a search trial scores: by default the strategy's own ``run`` (``row``: which of its variants,
        default the strategy's own or its only one). A strategy may override this with a cheaper path that computes
        the same row, e.g. ``fuse_then_joint`` scoring its ``fused`` row re-fuses cached fine-tunes without training
        anything else. It must give the metrics ``run`` would give for the same params and seed."""
        rows = self.run(stages, params)
        want = row or self.name
        if want in rows:
            return rows[want]
        if row is None and len(rows) == 1:
            return next(iter(rows.values()))
        raise BenchError(f"strategy {self.name!r} produced rows {sorted(rows)}, not {want!r}; set row: in the space")

    def search_prepare(self, stages: Stages, params: Any, row: str | None = None) -> None:  # noqa: B027
        """Optional: compute, once before the first trial of a search scoring ``row``, what every trial shares
        (``fuse_then_joint``: the per-task fine-tunes a fusion search re-fuses), so parallel workers do not."""

    @classmethod
    def parse_params(cls, params: dict[str, Any]) -> Frozen:
        return validated(cls.Params, params, f"strategy {cls.name!r}")

    @classmethod
    def row_names(cls) -> tuple[str, ...]:
        return cls.rows or (cls.name,)


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        return STRATEGIES.register(name)(cls)

    return deco


def default_dirs() -> list[Path]:
    """``./strategies`` of the working directory (when it exists), then the built-in strategies (``strategies/``
    beside the package in a checkout, ``bench/_builtin/strategies`` in a wheel)."""
    from bench.suites import builtin_dir, user_dirs

    return [*user_dirs("strategies"), builtin_dir("strategies")]


def strategy_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Every strategy folder in search order: ``./strategies``, the ``strategy_dirs=[...]`` folders, the built-ins.
    A file name found earlier shadows the same name later (a user's ``naive_mtl.py`` replaces the built-in one); given
    to :func:`bench.search.space.load_space`, the same order holds for search spaces (``<folder>/spaces/*.yaml``)."""
    from bench.suites import builtin_dir, user_dirs

    return [*user_dirs("strategies", list(extra)), builtin_dir("strategies")]


_loaded: set[Path] = set()


def discover(extra: Iterable[str | Path] = ()) -> Registry[type[Strategy]]:
    """Import every ``*.py`` in the strategy folders once (:func:`strategy_dirs`), which registers the strategies they
    define. A file whose name an earlier folder already has is skipped."""
    extra = [Path(e) for e in extra]
    for folder in extra:
        if not folder.is_dir():
            raise BenchError(f"strategy folder {str(folder)!r} does not exist; fix strategy_dirs")
    seen: set[str] = set()
    for folder in dict.fromkeys(p.resolve() for p in strategy_dirs(extra)):
        if not folder.is_dir():
            continue
        for file in sorted(folder.glob("*.py")):
            path = file.resolve()
            if file.name.startswith("_") or file.name in seen:
                continue
            seen.add(file.name)
            if path in _loaded:
                continue
            mod_name = f"bench_strategies.{file.stem}_{abs(hash(str(path))) % 10**8}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            _loaded.add(path)
            try:
                spec.loader.exec_module(module)
            except BenchError as e:  # e.g. a name another plug-in registered
                _loaded.discard(path)
                raise BenchError(f"plug-in {file}: {e}") from None
            except Exception as e:  # noqa: BLE001 (a plug-in's bug: one line, before any work)
                _loaded.discard(path)
                raise BenchError(f"plug-in {file} failed to import: {where_raised(e, path)}; fix it or move it out "
                                 f"of {folder}") from None
    return STRATEGIES


def where_raised(err: BaseException, near: Path | None = None) -> str:
    """``"ZeroDivisionError: division by zero (at strategies/mine.py:12)"``: an exception as one line, with the
    innermost frame of ``near`` (a plug-in file), else the innermost frame outside this package."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, SyntaxError) and err.filename:
        frames.append(traceback.FrameSummary(err.filename, err.lineno or 0, "<module>"))
    pick = [f for f in frames if near is not None and Path(f.filename).resolve() == Path(near).resolve()]
    if not pick:
        package = str(Path(__file__).resolve().parent)
        pick = [f for f in frames if not str(Path(f.filename).resolve()).startswith(package)] or frames
    at = f" (at {pick[-1].filename}:{pick[-1].lineno})" if pick else ""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}{at}" if text else f"{type(err).__name__}{at}"


def source_hash(obj: Any) -> str:
    """A content hash of the file that defines ``obj`` (a strategy, weighting or fusion class): editing a plug-in
    changes the keys of what it computes, so its cached results are not reused."""
    import inspect

    try:
        file = inspect.getsourcefile(obj)
    except TypeError:
        file = None
    if not file or not Path(file).is_file():
        return ""
    return _file_hash(str(Path(file).resolve()), Path(file).stat().st_mtime_ns)


def _file_hash(path: str, mtime_ns: int) -> str:
    import hashlib

    key = (path, mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return _HASHES[key]


_HASHES: dict[tuple[str, int], str] = {}


def _is_builtin(file: Path) -> bool:
    """Defined by bench itself: the package, or its built-in strategies folder (beside it in a checkout)."""
    from bench.suites import builtin_dir

    file = file.resolve()
    return any(root in file.parents for root in (Path(__file__).resolve().parent, builtin_dir("strategies").resolve()))


def plugin_source(cls: type) -> str:
    """The source hash of a plug-in class from a user folder (``./strategies``, ``strategy_dirs=``), else "":
    built-in code is versioned by ``STAGE_VERSIONS``, so the keys of built-ins stay stable across edits that do
    not change results."""
    import inspect

    try:
        file = inspect.getsourcefile(cls)
    except TypeError:
        return ""
    return "" if not file or _is_builtin(Path(file)) else source_hash(cls)


def user_plugin_sources(extra: Iterable[str | Path] = ()) -> dict[str, str]:
    """File -> content hash of every plug-in file in the user folders of a command (``./strategies``, then
    ``strategy_dirs=``; not the built-ins): part of every cell's hash, so that editing a plug-in (a weighting, a
    fusion method, a strategy) recomposes the records; the stages it computed are recomputed through their own keys."""
    from bench.suites import user_dirs

    files = [p.resolve() for folder in user_dirs("strategies", list(extra)) if Path(folder).is_dir()
             for p in sorted(Path(folder).glob("*.py")) if not p.name.startswith("_") and not _is_builtin(p)]
    return {str(p): _file_hash(str(p), p.stat().st_mtime_ns) for p in files}


def origin(obj: Any) -> str:
    """Where a registered strategy, weighting or fusion method was defined, for ``bench list``: ``built-in`` (the
    package or its built-in strategies), ``./strategies``, or the ``strategy_dirs`` folder of its file."""
    from bench.suites import where

    file = getattr(sys.modules.get(getattr(obj, "__module__", "")), "__file__", None)
    return where(Path(file), "strategies") if file else "built-in"
