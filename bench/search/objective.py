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
from bench.stages import Outcome, Stages, SuiteContext, make_row
from bench.store import Store, content_hash

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

    def value(self, row: dict[str, Any], suite: SuiteConfig, baseline: dict[str, dict[str, float]] | None) -> float:
        val = row["metrics"].get("validation", {})
        if self.kind == "task":
            return float(val[self.task][self.metric])
        if self.kind == "throughput":
            return float(row["telemetry"].get("train_samples_per_s", 0.0))
        if self.kind == "mean":
            prim = [(val[t.name][t.primary_metric], M.direction(t.primary_metric)) for t in suite.tasks]
            if self.direction == "minimize" or all(d == "max" for _, d in prim):
                return float(sum(v for v, _ in prim) / len(prim))
            return float(sum(v if d == "max" else -v for v, d in prim) / len(prim))
        assert baseline is not None, "delta_m needs the separate baseline (prepare() computes it)"
        return delta_m(val, baseline, suite)


def delta_m(values: dict[str, dict[str, float]], base: dict[str, dict[str, float]], suite: SuiteConfig) -> float:
    """Δm% = (100/T) Σ_t (1/M_t) Σ_m (−1)^{l_tm} (N_tm − B_tm) / B_tm over the baseline's metrics (B = 0 skipped)."""
    per_task = []
    for t in suite.tasks:
        terms = []
        for metric, b in base[t.name].items():
            if b == 0 or metric not in values.get(t.name, {}):
                continue
            sign = -1.0 if M.direction(metric) == "min" else 1.0
            terms.append(sign * (values[t.name][metric] - b) / abs(b))
        if terms:
            per_task.append(sum(terms) / len(terms))
    return 100.0 * sum(per_task) / len(per_task) if per_task else 0.0


def parse_objectives(spec: Any, suite: SuiteConfig, fuse_mode: bool) -> list[Objective]:
    specs = [str(s) for s in (spec if isinstance(spec, list) else [spec])]
    out: list[Objective] = []
    valid = "mean, delta_m, task:<name>[:<metric>], per_task, throughput"
    for s in specs:
        if s == "mean":
            dirs = {M.direction(t.primary_metric) for t in suite.tasks}
            out.append(Objective(s, "mean", "minimize" if dirs == {"min"} else "maximize"))
        elif s == "delta_m":
            out.append(Objective(s, "delta_m", "maximize"))
        elif s == "per_task":
            out += [Objective(f"task:{t.name}", "task", _dir(t.primary_metric), t.name, t.primary_metric)
                    for t in suite.tasks]
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
            task = suite.task(name)
            metric = parts[2] if len(parts) > 2 else task.primary_metric
            if metric not in task.metric_names or len(parts) > 3:
                raise BenchError(f"objective={s!r}: task {name!r} reports {', '.join(task.metric_names)}; "
                                 f"write task:{name} or task:{name}:<metric>")
            out.append(Objective(s, "task", _dir(metric), name, metric))
        else:
            raise BenchError(f"unknown objective {s!r}{did_you_mean(s, ['mean', 'delta_m', 'per_task', 'throughput'])}"
                             f"; valid: {valid}")
    if len({o.spec for o in out}) != len(out):
        raise BenchError(f"objective={spec!r} names the same objective twice")
    return out


def _dir(metric: str) -> str:
    return "maximize" if M.direction(metric) == "max" else "minimize"


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
        """Compute, before any trial, what every trial shares: the per-task fine-tunes of a fusion search and the
        ``separate`` baseline of Δm% (both are the ``separate`` stages, on validation). Returns the stages it had
        to compute (empty when they came from the store)."""
        ctx = self.context(self.cfg.suite)
        # what only the loaded suite can refuse (RegMean without linear layers, entropy on regression) fails now
        for overrides in self.cfg.space.probes(self.cfg.tasks):
            self.cfg.strategy().check_suite(self.cfg.variant(overrides).params, ctx)
        if not (self.cfg.space.mode == "fuse" or any(o.kind == "delta_m" for o in self.cfg.objectives)):
            return []
        from bench.strategy import STRATEGIES, NoParams

        stages = Stages(ctx, self.store, self.cfg.seed, eval_splits=VALIDATION)
        n0 = len(self.store.computed)
        row = STRATEGIES.get("separate")().run(stages, NoParams())["separate"]
        self.baseline = row["metrics"]["validation"]
        return self.store.computed[n0:]

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
                              prune_stage=cfg.space.prune_stage)
        n0 = len(self.store.computed)
        try:
            if cfg.space.mode == "fuse":
                row = self._fuse_row(stages, variant.params, cost, keep=cfg.keep_checkpoints)
            else:
                rows = variant.strategy().run(stages, variant.params)
                row = rows[self._row_name(rows)]
        except CellFailed as e:
            # a diverging configuration (NaN loss) is a bad region of the space, not a broken worker: prune it so
            # the count of finished trials still advances and the sampler learns to avoid it
            trial.set_user_attr("failed", str(e))
            raise optuna.TrialPruned(f"diverged: {e}") from None
        finally:
            new = self.store.computed[n0:]
            cost.update(seconds=time.perf_counter() - t0, new_stages=new,
                        new_trainings=sum(1 for s in new if s.split("/")[0] in TRAINING_STAGES))
            trial.set_user_attr("cost", cost)
        trial.set_user_attr("validation", {t: per[variant.suite.task(t).primary_metric]
                                           for t, per in row["metrics"].get("validation", {}).items()})
        values = [o.value(row, variant.suite, self.baseline) for o in cfg.objectives]
        return values[0] if single else values

    def _row_name(self, rows: dict[str, Any]) -> str:
        want = self.cfg.space.row or self.cfg.strategy.name
        if want in rows:
            return want
        if self.cfg.space.row is None and len(rows) == 1:
            return next(iter(rows))
        raise BenchError(f"space {self.cfg.space.name!r}: strategy {self.cfg.strategy.name!r} produced rows "
                         f"{sorted(rows)}, not {want!r}; set row: in the space")

    @staticmethod
    def _fuse_row(stages: Stages, params: Any, cost: dict[str, Any], keep: bool) -> dict[str, Any]:
        """Fusion only: the cached fine-tunes, fused with this trial's parameters, evaluated on validation.
        The same stages ``fuse_then_joint`` runs before its joint phase, which a fusion search never reaches.

        A streaming method fuses in memory straight into a model and evaluates it: nothing is written (a trial's
        model is a full backbone, 90 MB for MiniLM, and writing and deleting it cost more than fusing it). With
        ``keep``, or for a learned or data-aware method (a cached stage: one per configuration, reused by every
        trial and run that asks for it), the fused model is a stage in the store."""
        from bench.fusion import FUSIONS, ModelFusion

        tunes = [stages.finetune(t) for t in stages.task_names]
        parts = [t.ckpt for t in tunes]
        if keep or issubclass(FUSIONS.get(params.fusion), ModelFusion):
            fused = stages.fuse(parts, params.fusion, dict(params.fusion_params))
            ev = stages.evaluate(fused.ckpt)
            cost["fuse_seconds"] = fused.info.get("telemetry", {}).get("wall_time_s")
            cost["eval_seconds"] = ev.info.get("telemetry", {}).get("wall_time_s")
            return make_row(fused, ev, metrics_from=[ev])
        t0 = time.perf_counter()
        model, stats = stages.fused_model(parts, params.fusion, dict(params.fusion_params))
        t1 = time.perf_counter()
        metrics, rate, _ = stages.evaluate_model(model, VALIDATION)
        cost["fuse_seconds"], cost["eval_seconds"] = t1 - t0, time.perf_counter() - t1
        ev = Outcome(None, {"metrics": metrics, "telemetry": {**rate, "wall_time_s": time.perf_counter() - t0,
                                                              "fusion": stats}})
        return make_row(ev, metrics_from=[ev])
