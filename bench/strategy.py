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
    """``strategies/`` beside the package (a source checkout) and in the working directory."""
    here = Path(__file__).resolve().parent.parent / "strategies"
    cwd = Path.cwd() / "strategies"
    return [here] + ([cwd] if cwd.resolve() != here.resolve() else [])


_loaded: set[Path] = set()


def discover(extra: Iterable[str | Path] = ()) -> Registry[type[Strategy]]:
    """Import every ``*.py`` in the strategy folders once, which registers the strategies they define."""
    for folder in [*default_dirs(), *map(Path, extra)]:
        if not folder.exists():
            if folder in map(Path, extra):
                raise BenchError(f"strategy folder {str(folder)!r} does not exist; fix strategy_dirs")
            continue
        for file in sorted(folder.glob("*.py")):
            path = file.resolve()
            if path in _loaded or file.name.startswith("_"):
                continue
            mod_name = f"bench_strategies.{file.stem}_{abs(hash(str(path))) % 10**8}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            _loaded.add(path)
            spec.loader.exec_module(module)
    return STRATEGIES
