"""``bench search`` options: parsed and validated completely before any storage is opened or trial is run.

Search keys: ``space trials workers study storage objective pruner sampler_seed startup seed heartbeat plots label
threads keep_checkpoints``, and the launcher's (``launcher launcher.* devices wait``: where the ``workers`` run).
Every other key is a ``bench run`` override (``suite strategy results_dir tasks sample_scale data_dir plugin_dirs``,
``train.* backbone.* split.* strategy.*``) and is validated by ``bench run``'s own planner, so a typo fails the same
way in both commands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import SPEED_KNOBS, SuiteConfig, TrainConfig
from bench.errors import BenchError, did_you_mean
from bench.launch import LAUNCH_KEYS, Launcher, is_launch_key, launcher_from
from bench.options import renamed
from bench.overrides import as_bool, expand, parse
from bench.plan import (
    PREFIXES,
    SUITE_PREFIXES,
    DataProbe,
    Variant,
    build_suite,
    check_keys,
    default_suite,
    make_variant,
)
from bench.precheck import STRATEGY_HINT
from bench.precheck import folders as plugin_folders
from bench.search.objective import Objective, parse_objectives
from bench.search.space import Space, load_space
from bench.store import content_hash
from bench.strategy import STRATEGIES, Strategy, discover, strategy_dirs

SEARCH_KEYS = {"space", "trials", "workers", "study", "storage", "objective", "pruner", "sampler_seed", "startup",
               "seed", "heartbeat", "plots", "label", "threads", "keep_checkpoints", "_worker"}
RUN_KEYS = {"suite", "strategy", "results_dir", "tasks", "sample_scale", "data_dir", "plugin_dirs", "strategy_dirs"}
PRUNERS = ("median", "hyperband", "none")


def _int(opts: dict[str, Any], key: str, default: int, low: int) -> int:
    v = opts.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise BenchError(f"{key}={v!r} must be an integer >= {low}")
    return v


@dataclass
class SearchConfig:
    args: list[str]  # the command line, as given (workers re-run it)
    combo: dict[str, Any]  # the bench-run overrides (typed), the search's fixed part
    strategy: type[Strategy]
    space: Space
    suite: SuiteConfig  # the base suite (every fixed override applied)
    objectives: list[Objective]
    trials: int
    workers: int
    study: str
    storage: str
    pruner: str
    sampler_seed: int
    startup: int
    seed: int
    heartbeat: int
    plots: bool
    keep_checkpoints: bool  # fusion trials: keep every fused model (default: drop them once evaluated)
    label: str
    threads: int | None
    worker: int | None
    results_dir: Path
    launcher: Launcher | None = None  # where the workers run (None inside a worker)
    notes: list[str] = field(default_factory=list)
    probe: DataProbe = field(default_factory=DataProbe, repr=False)  # optional tasks' data, looked for once

    @property
    def tasks(self) -> list[str]:
        return self.suite.task_names

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def out_dir(self) -> Path:
        return self.results_dir / self.suite.name / "search" / self.study

    def fixed_overrides(self) -> dict[str, Any]:
        """The overrides every trial shares: the space's ``fixed`` entries, then the command line's (which win)."""
        run = {k: v for k, v in self.combo.items() if k != "_swept"}
        return {**self.space.fixed, **run}

    @property
    def row(self) -> str | None:
        """The row a trial scores: the space's ``row:``, else the one the strategy declares for the space's mode."""
        return self.space.row or self.strategy.search_rows.get(self.space.mode)

    def variant(self, overrides: dict[str, Any]) -> Variant:
        """The validated (suite, strategy, params) of one trial: :func:`bench.plan.make_variant`, what
        ``bench run`` builds for the same overrides. A trial that tunes no suite setting shares the base suite."""
        combo = {**self.fixed_overrides(), **overrides}
        same_suite = self.suite is not None and not any(k.startswith(SUITE_PREFIXES) for k in overrides)
        return make_variant(combo, self.strategy, label=self.label, suite=self.suite if same_suite else None,
                            probe=self.probe)

    def fingerprint(self) -> dict[str, Any]:
        """What makes two invocations the same search (a rerun must match it to resume the study)."""
        speed = {f"train.{k}" for k in SPEED_KNOBS}  # a resumed study may use other workers or log intervals
        return {"suite": content_hash(self.suite.results_dump()), "strategy": self.strategy.name,
                "fixed": {k: v for k, v in sorted(self.fixed_overrides().items())
                          if k not in ("results_dir", "suite", *speed)},
                "space": self.space.describe(), "objectives": [o.spec for o in self.objectives], "seed": self.seed}


def load_config(args: list[str]) -> SearchConfig:
    pairs = parse(args)
    for key, value, is_sweep in pairs:
        if renamed(key, value) is not None:
            raise renamed(key, value)  # type: ignore[misc]
        if is_sweep:
            raise BenchError(f"{key}: a search takes one value per key (the space declares what varies), not a "
                             f"comma sweep")
        if key not in SEARCH_KEYS | RUN_KEYS and not key.startswith(PREFIXES) and not is_launch_key(key):
            known = sorted((SEARCH_KEYS - {"_worker"}) | RUN_KEYS | set(LAUNCH_KEYS))
            raise BenchError(f"unknown key {key!r}{did_you_mean(key, known)}; valid: {', '.join(known)}, and "
                             f"dotted keys under {', '.join(p[:-1] for p in PREFIXES)}")
    opts = {k: v for k, v, _ in pairs if k in SEARCH_KEYS}
    run_args = [a for a, (k, _, _) in zip(args, pairs) if k not in SEARCH_KEYS and not is_launch_key(k)]
    # workers=K is the number of search workers; the launcher decides where they run (checked before any storage)
    launcher = None if "_worker" in opts else launcher_from(
        [p for p in pairs if is_launch_key(p[0]) or p[0] in ("plugin_dirs", "strategy_dirs")])

    strategy_name = next((v for k, v, _ in pairs if k == "strategy"), None)
    if strategy_name is None or isinstance(strategy_name, list):
        raise BenchError("give exactly one strategy to search, e.g. strategy=naive_mtl")
    if not any(k == "suite" for k, _, _ in pairs):
        run_args.insert(0, f"suite={default_suite()}")
    # the fixed part is checked by bench run's own planner (bench.plan), so a typo fails the same way in both
    run_pairs = parse(run_args)
    check_keys(run_pairs)
    combo = expand(run_pairs)[0]
    discover(plugin_folders(combo))
    strategy = STRATEGIES.get(str(strategy_name), hint=STRATEGY_HINT)

    spec = opts.get("space")
    if not spec:
        from bench.search.space import list_spaces

        folders = _folders(combo)
        have = ", ".join(list_spaces(strategy.name, folders)) or "none"
        raise BenchError(f"give space=<name> (spaces of {strategy.name}: {have}) or space=path/to/space.yaml")
    space = load_space(str(spec), strategy.name, _folders(combo))
    _check_space_keys(space, strategy, combo)
    # the base suite (the space's fixed entries, then the command line), built once, here; the strategy's params
    # are validated on the probes of the space (_probe), since the space may tune a required one
    probe = DataProbe()
    suite = build_suite({**space.fixed, **{k: v for k, v in combo.items() if k != "_swept"}}, probe=probe)
    if suite.schedule is not None:  # a trial scores one model on one task set; a schedule has one per step
        raise BenchError(f"bench search tunes one model on one task set, but suite {suite.name!r} declares a "
                         "schedule; search without it (a copy of the suite without schedule:) and run the schedule "
                         "with the best params: bench run ... params=best.yaml")

    trials = _int(opts, "trials", 20, 1)
    workers = _int(opts, "workers", 1, 1)
    seed = _int(opts, "seed", 0, 0)
    pruner = str(opts.get("pruner", "median"))
    if pruner not in PRUNERS:
        raise BenchError(f"pruner={pruner!r}{did_you_mean(pruner, PRUNERS)}; valid: {', '.join(PRUNERS)}")
    threads = opts.get("threads")
    if threads is not None:
        threads = _int(opts, "threads", 1, 1)
    elif "OMP_NUM_THREADS" not in os.environ:
        # K worker processes on C cores: C // K threads each; oversubscribed cores make small models ~10x slower
        threads = max(1, (os.cpu_count() or 1) // workers)
    results_dir = Path(combo.get("results_dir", "results"))
    label = str(opts.get("label", f"{strategy.name}[tuned:{space.name}]"))

    cfg = SearchConfig(
        args=list(args), combo=combo, strategy=strategy, space=space, suite=suite,
        objectives=parse_objectives(opts.get("objective", "mean"), suite, space.mode == "fuse"),
        trials=trials, workers=workers, study="", storage="", pruner=pruner,
        sampler_seed=_int(opts, "sampler_seed", 0, 0), startup=_int(opts, "startup", min(10, max(2, trials // 3)), 0),
        seed=seed, heartbeat=_int(opts, "heartbeat", 10, 1), plots=as_bool(opts, "plots", True),
        keep_checkpoints=as_bool(opts, "keep_checkpoints", False), label=label,
        threads=threads, worker=opts.get("_worker"), results_dir=results_dir, launcher=launcher, probe=probe)
    _probe(cfg)
    default_name = f"{cfg.suite.name}-{strategy.name}-{space.name}"
    if [o.spec for o in cfg.objectives] != ["mean"]:
        default_name += "-" + "+".join(o.spec.replace(":", "_") for o in cfg.objectives)
    cfg.study = str(opts.get("study", default_name))
    if not cfg.study or "/" in cfg.study:
        raise BenchError(f"study={cfg.study!r}: give a non-empty name without '/'")
    cfg.storage = str(opts.get("storage", f"sqlite:///{results_dir / cfg.suite.name / 'search' / 'optuna.db'}"))
    return cfg


def _folders(combo: dict[str, Any]) -> list[Path]:
    return strategy_dirs(plugin_folders(combo))  # the order strategies are found in


def _check_space_keys(space: Space, strategy: type[Strategy], combo: dict[str, Any]) -> None:
    """Every tuned key must be a knob the strategy (or the trainer) has, and not also fixed on the command line."""
    fields = list(strategy.Params.model_fields)
    for key in space.params:
        if key in combo:
            raise BenchError(f"{key} is tuned by space {space.name!r} and also given on the command line; drop one")
        kind, rest = key.split(".", 1)
        if kind == "strategy" and rest.split(".")[0] not in fields:
            have = ", ".join(fields) or "none"
            raise BenchError(f"space {space.name!r} tunes {key!r} but strategy {strategy.name!r} has no parameter "
                             f"{rest.split('.')[0]!r}{did_you_mean(rest.split('.')[0], fields)}; its parameters: "
                             f"{have}")
        if kind == "train" and rest not in TrainConfig.model_fields:
            raise BenchError(f"space {space.name!r} tunes {key!r} but there is no train setting {rest!r}"
                             f"{did_you_mean(rest, TrainConfig.model_fields)}")
    if space.mode != "train" and space.mode not in strategy.search_rows:
        have = ", ".join(n for n in STRATEGIES.names() if space.mode in STRATEGIES.get(n).search_rows) or "none"
        raise BenchError(f"space {space.name!r} has mode: {space.mode} but strategy {strategy.name!r} has no "
                         f"{space.mode} trials (strategies with them: {have}); use mode: train")


def _probe(cfg: SearchConfig) -> None:
    """Build the variant of a few points of the space (defaults, every categorical choice) so that a parameter the
    strategy cannot take (e.g. fusion_params.k for weighted fusion) fails now, with one line, not in trial 7."""
    for overrides in cfg.space.probes(cfg.tasks):
        try:
            cfg.variant(overrides)
        except BenchError as e:
            raise BenchError(f"space {cfg.space.name!r} does not fit strategy {cfg.strategy.name!r}: {e}") from None
