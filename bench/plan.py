"""One plan for ``bench run`` and ``bench search``: command-line overrides -> validated variants.

Everything is resolved here, once, before any work: the suite (its YAML with the ``train.*``/``backbone.*``/...
overrides), the tasks it will really train on (an optional task whose files are absent is dropped here, with a
note, so the static λ, fusion weights and a search's simplex are sized from the same task list the trainer sees),
each strategy's ``Params`` (``strategy.x=...`` goes to the strategies that have a parameter ``x``; the weighting and
fusion method they name are checked with them, :mod:`bench.specs`, and against the tasks here), and the strategy's
own :meth:`~bench.strategy.Strategy.check`. A search builds every trial's variant with
:func:`make_variant`, the very function a run uses, so a trial and ``bench run params=best.yaml`` are one code path.

The front half, what needs no imported plug-in and no model, is defined once in :mod:`bench.precheck`: ``bench
run`` checks a command line with it before it imports this module and the training stack behind it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import Frozen, SuiteConfig
from bench.errors import BenchError
from bench.launch import Launcher, without_launch_args
from bench.plugins.hashing import used_plugins
from bench.precheck import (  # the front half of planning, which imports nothing heavy: defined there once
    DEFAULT_SUITE,
    FALLBACK_SUITE,
    PREFIXES,
    STRATEGY_HINT,
    SUITE_PREFIXES,
    TOP_KEYS,
    check_keys,
    default_suite,
    folders,
    front,
    given_params,
    options,
    seeds_of,
    select_params,
    set_dotted,
    strategy_names,
    suite_of,
    unused_params,
)
from bench.specs import specs_of
from bench.stages import STAGE_VERSION
from bench.store import content_hash
from bench.strategy import STRATEGIES, ScheduleStrategy, Strategy, discover, source_hash
from bench.suites import validate_suite

__all__ = ["DEFAULT_SUITE", "FALLBACK_SUITE", "PREFIXES", "SUITE_PREFIXES", "TOP_KEYS", "Plan", "Variant",
           "DataProbe", "build_suite", "check_keys", "default_suite", "make_plan", "make_variant", "seeds_of",
           "set_dotted", "strategy_names", "strategy_params"]


@dataclass
class Variant:
    """One (suite config, strategy, params) combination; it runs once per seed."""

    suite: SuiteConfig
    strategy: type[Strategy]
    params: Frozen
    label: str
    notes: list[str] = field(default_factory=list)  # what planning decided for it (a skipped optional task)
    #: ``"<kind>:<name>"`` -> source hash of each user plug-in it uses (its strategy, the weighting and fusion method
    #: its params name): editing one plug-in re-keys the cells that use it and no other
    plugins: dict[str, str] = field(default_factory=dict)
    _hashes: dict[int, str] = field(default_factory=dict, repr=False, compare=False)  # seed -> cell hash

    def config(self) -> dict[str, Any]:
        """Everything that decides this variant's results except the seed: what a leaderboard row must share."""
        return {"suite": self.suite.results_dump(), "strategy": self.strategy.name,
                "params": self.params.model_dump(mode="json"), "budget_match": self.suite.budget.match}

    def budget_fingerprint(self) -> str:
        """What a Δm% baseline must share with a row: the training budget and how budgets are matched."""
        return content_hash({"train": self.suite.results_dump()["train"], "budget_match": self.suite.budget.match})

    def cell_hash(self, seed: int) -> str:
        # the label is part of the cell: two labels of one configuration are two records (an A/A control), whose
        # stages still come from one cache. The strategy's source is too: an edited strategy re-composes its rows
        # (from cached stages where its stage calls did not change). Memoised: a job looks its cell up by hash
        if seed not in self._hashes:
            self._hashes[seed] = content_hash({**self.config(), "label": self.label, "seed": seed,
                                               "v": STAGE_VERSION, "source": source_hash(self.strategy),
                                               "plugins": [f"{k}={h}" for k, h in self.plugins.items()]})
        return self._hashes[seed]


@dataclass
class Plan:
    variants: list[Variant]
    seeds: list[int]
    results_dir: Path
    force: bool
    report: bool = True
    notes: list[str] = field(default_factory=list)
    launcher: Launcher | None = None
    args: list[str] = field(default_factory=list)  # the command line without launcher keys: what a job re-plans
    trackers: list[Any] = field(default_factory=list)

    @property
    def cells(self) -> list[tuple[Variant, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]


class DataProbe:
    """Why each optional task's data cannot be loaded here ("" when it can), its source asked once per probe: one
    probe serves a whole plan (every combination of a sweep) or a whole search (every trial)."""

    def __init__(self) -> None:
        self._why: dict[str, str] = {}  # the task's and split's specs, as JSON -> why absent

    def absent(self, task: dict[str, Any], split: dict[str, Any]) -> str:
        from bench.config import SplitConfig, TaskConfig
        from bench.data import SOURCES
        from bench.data.base import MissingData

        key = json.dumps([task, split], sort_keys=True, default=str)
        if key not in self._why:
            cfg = TaskConfig(**task)
            try:
                SOURCES.get(cfg.data.source)(cfg.data, [cfg], SplitConfig(**split))
                self._why[key] = ""
            except MissingData as e:
                self._why[key] = str(e)
        return self._why[key]


def build_suite(combo: dict[str, Any], notes: list[str] | None = None, probe: DataProbe | None = None) -> SuiteConfig:
    """The suite of one combination of overrides, validated, with absent optional tasks dropped (their reasons
    appended to ``notes``). The one task list everything sizes from is its ``task_names``. ``probe``: what was
    already found about optional tasks' data (a fresh probe asks each source)."""
    probe = probe if probe is not None else DataProbe()
    suite, name, path = suite_of(combo)
    # registry names are checked here too, so a typo fails before any data or model is loaded
    from bench.backbones import BACKBONES
    from bench.data import SOURCES
    from bench.tasks import check_task

    BACKBONES.get(suite.backbone.source)
    kinds = {t.name: check_task(t) for t in suite.tasks}  # each kind's name, own checks, metric names
    if suite.train.augment != "none":
        from bench.augment import check as check_augment

        check_augment(kinds)  # a crop of images whose tasks predict no map: one line before any data loads
    for spec in [suite.data, *(t.data for t in suite.tasks)]:
        if spec is not None:
            SOURCES.get(spec.source)
    optional = [t for t in suite.tasks if t.optional and suite.kind == "multi_input"]
    dropped = []
    for t in optional:
        why = probe.absent(t.model_dump(mode="json"), suite.split.model_dump(mode="json"))
        if why:
            dropped.append(t.name)
            if notes is not None:
                notes.append(f"skipped optional task {t.name!r}: {why}")
    if dropped:
        if len(dropped) == len(suite.tasks):
            raise BenchError(f"suite {suite.name!r}: no task has data ({'; '.join(notes or [])})")
        raw = suite.model_dump(mode="json")
        raw["tasks"] = [t for t in raw["tasks"] if t["name"] not in dropped]
        suite = validate_suite(raw, f"suite {name!r} ({path})")
    return suite


def strategy_params(cls: type[Strategy], given: dict[str, Any], only: bool) -> Frozen:
    """``cls``'s validated params from the ``strategy.*`` overrides it has a field for (all of them when it is the
    only strategy, so that a typo is reported against its fields)."""
    return cls.parse_params(select_params(cls.Params, given, only))


def make_variant(combo: dict[str, Any], cls: type[Strategy], label: str | None = None,
                 suite: SuiteConfig | None = None, notes: list[str] | None = None, only: bool = True,
                 probe: DataProbe | None = None) -> Variant:
    """The validated variant of one combination of overrides (a run's cell, a search's trial). ``suite``: the
    already built suite of ``combo`` (planning builds each distinct suite once); else it is built here, with
    ``probe`` (:func:`build_suite`)."""
    notes = [] if notes is None else notes
    suite = suite or build_suite(combo, notes, probe)
    given = given_params(combo)
    params = strategy_params(cls, given, only)
    if issubclass(cls, ScheduleStrategy) and suite.schedule is None:
        names = suite.task_names
        raise BenchError(f"strategy {cls.name!r} absorbs tasks step by step and needs a schedule, e.g. "
                         f"schedule=[[{','.join(names[:-1]) or names[0]}],[{names[-1]}]]")
    cls.check(params, suite.task_names)
    for spec in specs_of(params):  # each weighting / fusion method it names, against the tasks (bench.specs)
        spec.check(suite.task_names)
    if label is None:
        fields = set(cls.Params.model_fields)
        label = combo.get("label") or cls.name
        tags = [f"{k}={v}" for k, v in sorted(given.items()) if k.split(".")[0] in fields]
        tags += [f"{k}={v}" for k, v in sorted(combo.get("_swept", {}).items()) if not k.startswith("strategy")]
        if tags and "label" not in combo:
            label = f"{cls.name}[{','.join(tags)}]"
    return Variant(suite, cls, params, label, list(notes), used_plugins(cls, params))


def make_plan(args: list[str]) -> Plan:
    """Parse and validate everything a run needs, before any work."""
    f = front(args)
    combos, first, extra_dirs = f.combos, f.first, folders(f.first)
    discover(extra_dirs)
    trackers: list[str] = []
    if f.tracker is not None:
        from bench.track import trackers_from

        # after discover: plug-in trackers live in strategy files
        trackers = trackers_from(f.tracker[0], sweep=f.tracker[1])
    seeds = seeds_of(first)
    suites: dict[str, tuple[SuiteConfig, list[str]]] = {}
    probe = DataProbe()  # each optional task's data is looked for once per plan
    variants: list[Variant] = []
    notes: list[str] = []
    # strategy.x goes to the strategies that have x; with one strategy in the whole command, x must be one of its
    everyone = list(dict.fromkeys(n for combo in combos for n in strategy_names(combo)))
    classes = {n: STRATEGIES.get(n, hint=STRATEGY_HINT) for n in everyone}
    for combo in combos:
        skey = content_hash({k: v for k, v in combo.items() if not k.startswith("strategy") and k != "_swept"})
        if skey not in suites:
            suite_notes: list[str] = []
            suites[skey] = (build_suite(combo, suite_notes, probe), suite_notes)
            notes += [n for n in suite_notes if n not in notes]
        suite, suite_notes = suites[skey]
        for name in strategy_names(combo):
            variants.append(make_variant(combo, classes[name], suite=suite, notes=suite_notes,
                                         only=len(everyone) == 1))
        unused_params(combo, [c.Params for c in classes.values()], everyone)
    opts = options(first)
    return Plan(variants, seeds, opts.results_dir, opts.force, opts.report,
                notes=notes, launcher=f.launcher, args=without_launch_args(args), trackers=trackers)
