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
from typing import Any, ClassVar

from bench.config import Frozen, validated
from bench.errors import BenchError
from bench.registry import Registry
from bench.stages import Stages, SuiteContext


class NoParams(Frozen):
    pass


class Strategy(ABC):
    """How a strategy obtains its weights. ``run`` returns ``{variant: row}`` (see :func:`bench.stages.make_row`)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[Frozen]] = NoParams

    @abstractmethod
    def run(self, stages: Stages, params: Any) -> dict[str, dict[str, Any]]:
        """Compose stages; return one row per variant (e.g. ``{"fused": ..., "fuse_then_joint": ...}``)."""

    def check_suite(self, params: Any, ctx: SuiteContext) -> None:  # noqa: B027 (an optional hook)
        """Optional: fail with one line (a ``BenchError``) before any stage of the run is computed, given the loaded
        suite (``ctx.tasks``: the task configs, ``ctx.template``: the backbone), e.g. a fusion method that needs
        linear layers or class predictions. Runs once per variant, after the data is loaded."""

    @classmethod
    def parse_params(cls, params: dict[str, Any]) -> Frozen:
        return validated(cls.Params, params, f"strategy {cls.name!r}")


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
            spec.loader.exec_module(module)
    return STRATEGIES


def origin(obj: Any) -> str:
    """Where a registered strategy, weighting or fusion method was defined, for ``bench list``: ``built-in`` (the
    package or its built-in strategies), ``./strategies``, or the ``strategy_dirs`` folder of its file."""
    from bench.suites import where

    file = getattr(sys.modules.get(getattr(obj, "__module__", "")), "__file__", None)
    return where(Path(file), "strategies") if file else "built-in"
