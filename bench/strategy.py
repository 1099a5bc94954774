"""The Strategy interface and its registry.

A strategy is one Python file under ``strategies/`` (or any folder named by ``plugin_dirs=[...]``, or a module of an
installed plug-in package) holding a class registered with :func:`register_strategy`. It declares its knobs as a
frozen pydantic ``Params`` model and composes stages in :meth:`Strategy.run`, returning one leaderboard row per
variant it produced. Discovery, origins and source hashes of plug-ins live in :mod:`bench.plugins`.

Example (a complete strategy file):

    from bench.api import Frozen, Stages, Strategy, make_row, register_strategy

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

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.config import Frozen, NoParams, validated
from bench.errors import BenchError
from bench.plugins.discovery import default_dirs, origin, plugin_dirs, where_raised
from bench.plugins.discovery import discover as discover_plugins
from bench.plugins.hashing import plugin_source, source_hash
from bench.plugins.registry import Registry

__all__ = ["STRATEGIES", "Carry", "ScheduleStrategy", "Strategy", "TaskStep", "default_dirs", "discover", "origin",
           "plugin_source", "register_strategy",
           "source_hash", "strategy_dirs", "where_raised"]

if TYPE_CHECKING:  # annotations only: the interface imports no torch, so names and Params are read before it
    from bench.stages import Outcome, Stages, SuiteContext


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


@dataclass(frozen=True)
class TaskStep:
    """One step of a task schedule (``schedule=[[a,b],[c],[-a]]``: docs/dynamic_tasks.md), as a schedule strategy
    sees it. Task tuples are in suite order except ``seen``, which is in arrival order."""

    index: int  # 1-based
    arrived: tuple[str, ...]  # tasks added at this step
    retired: tuple[str, ...]  # tasks retired at this step (before the additions)
    tasks: tuple[str, ...]  # the tasks the model serves after this step
    seen: tuple[str, ...]  # every task added up to and including this step, retired ones too

    @property
    def first(self) -> bool:
        return self.index == 1


@dataclass
class Carry:
    """What a schedule strategy hands from one step to the next: the step's model (a stage outcome whose checkpoint
    has a head for every task the step serves) and anything else it needs later (``merge_in``: its fine-tunes)."""

    model: Outcome
    state: dict[str, Any] = field(default_factory=dict)


class ScheduleStrategy(Strategy):
    """A strategy that absorbs a schedule's tasks one :class:`TaskStep` at a time, carrying its model forward.

    The schedule driver (:mod:`bench.schedule`) calls :meth:`step` once per step with ``stages`` restricted to the
    step's tasks (``stages.task_names``) and the previous step's :class:`Carry` (None at step 1); it evaluates the
    returned model on every task the step serves, and counts as the step's cost the stages first used at that step.
    A static strategy needs none of this: under a schedule its ``run`` is called once per step instead.

    Example (continue the previous model on the new tasks only, keeping the old heads):

        @register_strategy("sequential")
        class Sequential(ScheduleStrategy):
            def step(self, stages, params, step, prev):
                if prev is None:
                    return Carry(stages.joint())
                trained = stages.joint(init=prev.model.ckpt, tasks=list(step.arrived))
                heads = {t: prev.model.ckpt for t in step.tasks if t not in step.arrived}
                return Carry(stages.assemble(trained.ckpt, {**heads, **{t: trained.ckpt for t in step.arrived}}))
    """

    @abstractmethod
    def step(self, stages: Stages, params: Any, step: TaskStep, prev: Carry | None) -> Carry:
        """Absorb ``step`` (its new tasks, its retired ones) into ``prev``'s model; return this step's model."""

    def run(self, stages: Stages, params: Any) -> dict[str, Any]:
        raise BenchError(f"strategy {self.name!r} absorbs tasks step by step: give it a schedule, e.g. "
                         f"schedule=[[{','.join(stages.task_names[:-1]) or 'a'}],[{stages.task_names[-1]}]]")


#: the strategies: the built-in strategy files, ``./strategies``, ``plugin_dirs=`` folders and installed plug-in
#: packages register here (discovered on first read, :mod:`bench.plugins.discovery`)
STRATEGIES: Registry[type[Strategy]] = Registry("strategy", Strategy, plugins=True)


def register_strategy(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: ``strategy=name`` runs this class (the registry sets ``cls.name``)."""
    return STRATEGIES.register(name)


def discover(extra: Iterable[str | Path] = ()) -> Registry[type[Strategy]]:
    """Import every plug-in file of the plug-in folders and every installed plug-in package once
    (:func:`bench.plugins.discovery.discover`); the strategies they register."""
    discover_plugins(extra)
    return STRATEGIES


def strategy_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """The plug-in folders in search order (the old name of :func:`bench.plugins.discovery.plugin_dirs`)."""
    return plugin_dirs(extra)
