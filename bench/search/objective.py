"""What one trial computes: its overrides -> a validated variant -> stages on the validation split -> objective values.

Objectives (``objective=``; a list such as ``objective=[mean,throughput]`` or ``objective=per_task`` makes the study
multi-objective, which returns the Pareto set):

* ``mean`` (default): the mean over tasks of each task's primary validation metric. When every primary metric has
  the same direction the plain mean is optimised in that direction; when they differ, lower-is-better metrics
  enter with a minus sign and the mean is maximised (the score the trainer selects epochs on).
* ``delta_m``: Δm% versus ``separate`` on validation (docs/protocol.md; every metric of every task), maximised. The
  ``separate`` fine-tunes under the base (un-tuned) configuration are computed once before the first trial, or
  come from the store.
* ``task:<name>`` or ``task:<name>:<metric>``: one task's primary (or named) validation metric, in its direction.
* ``per_task``: one ``task:<name>`` objective per task.
* ``throughput``: training samples per second of the scored row (maximised); for score-vs-cost Pareto fronts.

The test split is never read: every stage is built with ``eval_splits=("validation",)``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench import metrics as M
from bench.config import SuiteConfig
from bench.errors import BenchError, CellFailed, did_you_mean
from bench.record import Row
from bench.stages import StageLog, Stages, SuiteContext
from bench.store import Store, content_hash
from bench.tasks import directions, primaries

if TYPE_CHECKING:
    from bench.search.config import SearchConfig

VALIDATION = ("validation",)
TRAINING_STAGES = ("finetune", "joint")
# TrainConfig fields that change the encoded tensors; any other train.* override reuses the loaded suite context
ENCODING_TRAIN_KEYS = ("max_train_samples", "max_eval_samples")


@dataclass(frozen=True)
class Objective:
    spec: str  # as written on the command line, e.g. "task:clean"
    kind: str  # mean | delta_m | task | throughput
    direction: str  # maximize | minimize
    task: str | None = None
    metric: str | None = None

    def value(self, row: Row, suite: SuiteConfig, baseline: dict[str, dict[str, float]] | None) -> float:
        val = row.metrics.get("validation", {})
        if self.kind == "task":
            return float(val[self.task][self.metric])
        if self.kind == "throughput":
            return float(row.telemetry.train_samples_per_s or 0.0)
        if self.kind == "mean":
            dirs = directions(list(suite.tasks))
            prim = [(val[t][m], dirs[(t, m)]) for t, m in primaries(list(suite.tasks)).items()]
            if self.direction == "minimize" or all(d == "max" for _, d in prim):
                return float(sum(v for v, _ in prim) / len(prim))
            return float(sum(v if d == "max" else -v for v, d in prim) / len(prim))
        assert baseline is not None, "delta_m needs the separate baseline (prepare() computes it)"
        return delta_m(val, baseline, suite)


def delta_m(values: dict[str, dict[str, float]], base: dict[str, dict[str, float]], suite: SuiteConfig) -> float:
    """Δm% of validation ``values`` against the baseline's, every metric of every task: the report's
    :func:`bench.metrics.delta_m` (one definition, docs/protocol.md)."""
    dirs = directions(list(suite.tasks))  # the tasks' metrics, per-label results (f1@label) left out
    keys = [(t, m) for t, m in dirs if m in base.get(t, {})]
    flat = lambda d: {(t, m): v for t, per in d.items() for m, v in per.items()}  # noqa: E731
    return M.delta_m(flat(values), flat(base), keys, dirs)


def parse_objectives(spec: Any, suite: SuiteConfig, fuse_mode: bool) -> list[Objective]:
    specs = [str(s) for s in (spec if isinstance(spec, list) else [spec])]
    out: list[Objective] = []
    valid = "mean, delta_m, task:<name>[:<metric>], per_task, throughput"
    for s in specs:
        if s == "mean":
            every = directions(list(suite.tasks))
            dirs = {every[(t, m)] for t, m in primaries(list(suite.tasks)).items()}
            out.append(Objective(s, "mean", "minimize" if dirs == {"min"} else "maximize"))
        elif s == "delta_m":
            out.append(Objective(s, "delta_m", "maximize"))
        elif s == "per_task":
            every = directions(list(suite.tasks))
            out += [Objective(f"task:{t}", "task", _dir(every[(t, m)]), t, m)
                    for t, m in primaries(list(suite.tasks)).items()]
        elif s == "throughput":
            if fuse_mode:
                raise BenchError("objective=throughput: fusion trials train nothing, so there is no training "
                                 "throughput to trade off; use it with a training space")
            out.append(Objective(s, "throughput", "maximize"))
        elif s.startswith("task:"):
            parts = s.split(":")
            name = parts[1] if len(parts) > 1 else ""
            if name not in suite.task_names:
                raise BenchError(f"objective={s!r}: suite {suite.name!r} has no task {name!r}"
                                 f"{did_you_mean(name, suite.task_names)}; tasks: {', '.join(suite.task_names)}")
            every = {m: d for (t, m), d in directions([suite.task(name)]).items()}
            metric = parts[2] if len(parts) > 2 else primaries([suite.task(name)])[name]
            if metric not in every or len(parts) > 3:
                raise BenchError(f"objective={s!r}: task {name!r} reports {', '.join(every)}; "
                                 f"write task:{name} or task:{name}:<metric>")
            out.append(Objective(s, "task", _dir(every[metric]), name, metric))
        else:
            raise BenchError(f"unknown objective {s!r}{did_you_mean(s, ['mean', 'delta_m', 'per_task', 'throughput'])}"
                             f"; valid: {valid}")
    if len({o.spec for o in out}) != len(out):
        raise BenchError(f"objective={spec!r} names the same objective twice")
    return out


def _dir(direction: str) -> str:
    return "maximize" if direction == "max" else "minimize"


# ------------------------------------------------------------------------------------------------- stages

class SearchStages(Stages):
    """Stages that report per-epoch validation for pruning only from the stage kind being tuned.

    A training trial may also run stages that are not the tuned one (``fuse_then_joint`` fine-tunes before its
    joint phase, usually from the store); their validation scores measure something else and must not feed the
    pruner, which compares trials step by step.
    """

    def __init__(self, *args: Any, prune_stage: str = "joint", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._report, self.on_epoch, self.prune_stage = self.on_epoch, None, prune_stage

    @contextmanager
    def _watch(self, kind: str):
        self.on_epoch = self._report if kind == self.prune_stage else None
        try:
            yield
        finally:
            self.on_epoch = None

    def finetune(self, *args: Any, **kwargs: Any):
        with self._watch("finetune"):
            return super().finetune(*args, **kwargs)

    def joint(self, *args: Any, **kwargs: Any):
        with self._watch("joint"):
            return super().joint(*args, **kwargs)


class Reporter:
    """``on_epoch`` for a trial: report validation after each epoch and raise TrialPruned when the pruner says so.

    The score is the trainer's selection score (mean primary validation metric, higher is better), negated for a
    minimised study so that "better" means the same to the pruner as to the study. Steps count epochs over every
    watched stage of the trial, so trials compare like with like.
    """

    def __init__(self, trial: Any, direction: str, enabled: bool, final_epoch: int):
        self.trial, self.sign, self.enabled, self.step = trial, (1.0 if direction == "maximize" else -1.0), enabled, 0
        self.final_epoch = final_epoch

    def __call__(self, epoch: int, score: float) -> None:
        import optuna

        self.step += 1
        if not self.enabled:
            return
        self.trial.report(self.sign * score, self.step)
        # after the last epoch the training is paid for: finishing the trial costs nothing and gives a value
        if epoch < self.final_epoch and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (validation score {score:.4f})")


# ------------------------------------------------------------------------------------------------- trials

class TrialRunner:
    """Evaluates trials for one search in one process (suite contexts are loaded once and reused)."""

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg
        self.store = Store(cfg.results_dir, cfg.suite.name)
        self.log = StageLog()  # the stages this search reused and computed (a trial's cost, what re-scoring forgets)
        self._contexts: dict[str, SuiteContext] = {}
        self.baseline: dict[str, dict[str, float]] | None = None

    def context(self, suite: SuiteConfig) -> SuiteContext:
        """The loaded suite; a trial that only changes optimisation settings (lr, epochs, ...) shares the data."""
        dump = suite.model_dump(mode="json")
        dump["train"] = {k: dump["train"][k] for k in ENCODING_TRAIN_KEYS}
        key = content_hash(dump)
        if key not in self._contexts:
            self._contexts[key] = SuiteContext.load(suite, self.store)
        ctx = self._contexts[key]
        return ctx if ctx.suite == suite else dataclasses.replace(ctx, suite=suite, train=suite.train)

    def prepare(self) -> list[str]:
        """Compute, before any trial, what every trial shares, so that parallel workers do not all compute it: the
        strategy's :meth:`~bench.strategy.Strategy.search_prepare` (a fusion search's per-task fine-tunes) and the
        baseline of Δm% (the ``BASELINE_STRATEGY``'s row, on validation). Returns the stages it had to compute
        (empty when they came from the store)."""
        from bench.config import BASELINE_STRATEGY
        from bench.strategy import STRATEGIES

        cfg = self.cfg
        ctx = self.context(cfg.suite)
        # what only the loaded suite can refuse (RegMean without linear layers, entropy on regression) fails now
        probes = [cfg.variant(overrides).params for overrides in cfg.space.probes(cfg.tasks)]
        for params in probes:
            cfg.strategy().check_suite(params, ctx)
        stages = Stages(ctx, self.store, cfg.seed, eval_splits=VALIDATION, log=self.log)
        n0 = len(self.log.computed)
        cfg.strategy().search_prepare(stages, probes[0], cfg.row)
        if any(o.kind == "delta_m" for o in cfg.objectives):
            baseline = STRATEGIES.get(BASELINE_STRATEGY)
            row = baseline().search_row(stages, baseline.Params())
            self.baseline = row.metrics["validation"]
        return self.log.computed[n0:]

    def __call__(self, trial: Any) -> float | list[float]:
        import optuna

        cfg = self.cfg
        t0 = time.perf_counter()
        # few user attributes, each written once: every write is a storage transaction (~15 ms on SQLite), which
        # would otherwise dominate a fusion trial on a small model
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        overrides = cfg.space.suggest(trial, cfg.tasks)
        trial.set_user_attr("overrides", overrides)
        cost: dict[str, Any] = {}
        variant = cfg.variant(overrides)
        ctx = self.context(variant.suite)
        single = len(cfg.objectives) == 1
        reporter = Reporter(trial, cfg.objectives[0].direction, enabled=single and cfg.pruner != "none",
                            final_epoch=variant.suite.train.epochs)
        stages = SearchStages(ctx, self.store, cfg.seed, eval_splits=VALIDATION, on_epoch=reporter,
                              prune_stage=cfg.space.prune_stage, log=self.log, scratch=not cfg.keep_checkpoints)
        n0 = len(self.log.computed)
        try:
            # the strategy's own code path (its run, or a cheaper hook that gives the same row): one code path
            # with `bench run params=best.yaml`
            row = variant.strategy().search_row(stages, variant.params, cfg.row)
        except CellFailed as e:
            # a diverging configuration (NaN loss) is a bad region of the space, not a broken worker: prune it so
            # the count of finished trials still advances and the sampler learns to avoid it
            trial.set_user_attr("failed", str(e))
            raise optuna.TrialPruned(f"diverged: {e}") from None
        finally:
            new = self.log.computed[n0:]
            cost.update(seconds=time.perf_counter() - t0, new_stages=new,
                        new_trainings=sum(1 for s in new if s.split("/")[0] in TRAINING_STAGES))
        for key in ("fuse_seconds", "eval_seconds"):  # what a fusion hook timed, for the cost summary
            if getattr(row.telemetry, key, None) is not None:
                cost[key] = getattr(row.telemetry, key)
        trial.set_user_attr("cost", cost)
        trial.set_user_attr("validation", {t: per[primaries([variant.suite.task(t)])[t]]
                                           for t, per in row.metrics.get("validation", {}).items()})
        values = [o.value(row, variant.suite, self.baseline) for o in cfg.objectives]
        return values[0] if single else values
