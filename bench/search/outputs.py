"""What a search leaves in ``results/<suite>/search/<study>/``.

* ``best.yaml``: the best trial as a ``bench run`` overrides file (``python -m bench run params=best.yaml``
  produces the tuned leaderboard row, labelled e.g. ``naive_mtl[tuned:lambda]``); in a multi-objective study,
  the Pareto member that is best on the first objective;
* ``pareto.csv`` and ``pareto/trial_<n>.yaml`` (multi-objective): the Pareto set, one overrides file per member;
* ``trials.csv``: Optuna's ``trials_dataframe()`` (parameters, values, states, durations, user attributes such as
  the resolved overrides, per-task validation metrics and the stages each trial had to compute);
* ``plots/``: Optuna's matplotlib plots as PNG: optimisation history, parameter importances, parallel coordinates,
  intermediate values (training spaces) and the Pareto front (2 or 3 objectives);
* ``summary.json``: counts, best values, where the study lives, cost figures, and ``margin``: the best trial's first
  objective minus the baseline trial's with its interval over the validation examples (:func:`margin`).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from bench.search.config import SearchConfig
from bench.search.storage import redact
from bench.store import write_json


def trial_overrides(cfg: SearchConfig, trial) -> dict[str, Any]:
    """The complete ``bench run`` overrides of a trial: the search's fixed part, the trial's values, a label."""
    fixed = cfg.fixed_overrides()
    fixed.setdefault("suite", cfg.combo.get("suite", cfg.suite.name))
    fixed.setdefault("results_dir", str(cfg.results_dir))  # the tuned row lands next to the search's stages
    return {**fixed, **trial.user_attrs.get("overrides", {}), "label": cfg.label}


def write_params(path: Path, cfg: SearchConfig, trial, note: str) -> None:
    values = ", ".join(f"{o.spec}={v:.6g}" for o, v in zip(cfg.objectives, trial.values))
    header = (f"# bench search: {note} trial #{trial.number} of study {cfg.study!r} ({redact(cfg.storage)})\n"
              f"# validation: {values}\n"
              f"# use: python -m bench run params={path}  [seeds=3 ...: command-line keys override this file]\n")
    body = {"overrides": trial_overrides(cfg, trial),
            "search": {"study": cfg.study, "storage": redact(cfg.storage), "trial": trial.number,
                       "objectives": {o.spec: v for o, v in zip(cfg.objectives, trial.values)}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))


def _jsonable_frame(df):
    """Dict and list cells (overrides, new stages) as JSON strings, so the CSV reads back unambiguously."""
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (dict, list))).any():
            df[col] = df[col].map(lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v)
    return df


def best_trial(cfg: SearchConfig, study):
    if len(cfg.objectives) == 1:
        return study.best_trial
    sign = 1 if cfg.objectives[0].direction == "maximize" else -1
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def write_outputs(cfg: SearchConfig, study, plots: bool, runner=None) -> dict[str, Any]:
    """Write every output; returns the paths and the figures the summary prints. With ``runner`` (the search's
    :class:`~bench.search.objective.TrialRunner`) the best trial's margin over the baseline trial gets its interval
    (:func:`margin`)."""
    import optuna
    from optuna.trial import TrialState

    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    result: dict[str, Any] = {"dir": out, "plots": [], "skipped_plots": []}
    if trials:
        _jsonable_frame(study.trials_dataframe()).to_csv(out / "trials.csv", index=False)
        result["trials_csv"] = out / "trials.csv"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = best_trial(cfg, study)
        write_params(out / "best.yaml", cfg, best, "best" if len(cfg.objectives) == 1 else "Pareto (first objective)")
        result["best"], result["best_yaml"] = best, out / "best.yaml"
        if len(cfg.objectives) > 1:
            import pandas as pd

            pareto = sorted(study.best_trials, key=lambda t: t.number)
            for t in pareto:
                write_params(out / "pareto" / f"trial_{t.number}.yaml", cfg, t, "Pareto-optimal")
            pd.DataFrame([{"trial": t.number, **{o.spec: v for o, v in zip(cfg.objectives, t.values)},
                           "overrides": json.dumps(t.user_attrs.get("overrides", {}))} for t in pareto]
                         ).to_csv(out / "pareto.csv", index=False)
            result["pareto"] = pareto
    if plots and len(complete) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result["plots"], result["skipped_plots"] = _plots(cfg, study, out / "plots")
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    result["counts"] = counts
    result["costs"] = _costs(cfg, trials)
    baseline = next((t for t in complete if t.user_attrs.get("baseline")), None)
    summary = {
        "study": cfg.study, "storage": redact(cfg.storage), "strategy": cfg.strategy.name, "space": cfg.space.name,
        "objectives": {o.spec: o.direction for o in cfg.objectives}, "trials_requested": cfg.trials,
        "states": counts, "costs": result["costs"],
        "best": {"trial": result["best"].number, "values": result["best"].values,
                 "overrides": result["best"].user_attrs.get("overrides")} if "best" in result else None,
        "baseline": {"trial": baseline.number, "values": baseline.values} if baseline else None,
        "optuna": optuna.__version__,
    }
    write_json(out / "summary.json", summary)
    if runner is not None and baseline is not None and "best" in result:
        result["margin"] = summary["margin"] = margin(cfg, runner, result["best"], baseline, len(complete))
        write_json(out / "summary.json", summary)
    result["baseline"] = baseline
    return result


LEVEL = 0.95


def margin(cfg: SearchConfig, runner, best, baseline, n_trials: int, level: float = LEVEL) -> dict[str, Any]:
    """The best trial's first objective minus the baseline trial's, with its ``level`` interval over the validation
    examples: both trials are scored again from the store (their stages are cached; a fusion trial re-fuses), their
    per-example predictions give jackknife influences of the objective (:mod:`bench.twolevel`), and the paired
    difference gets a normal interval and a two-sided p. A search trains one seed, so the interval is the
    validation-set part of the noise only: it says nothing about training noise, and the best of many trials is
    chosen because it scored high (its margin is optimistic). ``{"value", "lo", "hi", "level", "p", "examples",
    "objective", "note"}``; ``lo``/``hi`` None with a ``note`` when no interval can be given."""
    objective = cfg.objectives[0]
    value = float(best.values[0] - baseline.values[0])
    out: dict[str, Any] = {"objective": objective.spec, "value": value, "lo": None, "hi": None, "level": level,
                           "p": None, "examples": None, "best_trial": best.number, "baseline_trial": baseline.number,
                           "trials": n_trials, "note": ""}
    if best.number == baseline.number:
        out["note"] = "the baseline trial is the best one"
        return out
    if objective.kind == "throughput":
        out["note"] = "throughput has no per-example scores to resample"
        return out
    n0 = len(runner.log.computed)
    try:
        scores = [_objective_scores(cfg, runner, t, objective) for t in (best, baseline)]
    except Exception as exc:  # noqa: BLE001 - a margin without interval is still a margin
        out["note"] = f"no interval: {type(exc).__name__}: {exc}"
        return out
    finally:
        if not cfg.keep_checkpoints:  # what re-scoring wrote (a fusion trial's fused model): the store as it was
            _forget(runner.store, runner.log, runner.log.computed[n0:])
    if any(isinstance(s, str) for s in scores):
        out["note"] = f"no interval: {next(s for s in scores if isinstance(s, str))}"
        return out
    from bench import twolevel

    (sa, na), (sb, _) = scores
    est = twolevel.estimate([(1.0, sa), (-1.0, sb)])
    lo, hi = est.interval(level)
    out.update(value=est.value, lo=lo, hi=hi, p=est.p, examples=na)
    return out


def _forget(store, log, entries: list[str]) -> None:
    """Delete the stage folders ``entries`` (``stage/key``) and their stage's folder when it is left empty."""
    import shutil

    from bench.store import Store

    for entry in entries:
        stage, key = entry.split("/", 1)
        folder = store.stage_dir(stage, key)
        with store.lock(folder):
            Store.reset(folder)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.rmdir()
        except OSError:  # other stages of that kind are there
            pass
    del log.computed[len(log.computed) - len(entries):]


def _objective_scores(cfg: SearchConfig, runner, trial, objective):
    """A trial's first objective as :class:`bench.twolevel.Scores` (one seed) and the number of validation examples
    per task, from its re-scored row's validation predictions; a string says why not."""
    import numpy as np

    from bench import twolevel
    from bench.search.objective import VALIDATION
    from bench.stages import Stages
    from bench.stats.ratios import recipes_of
    from bench.tasks import directions, primaries, task_kind

    variant = cfg.variant(trial.user_attrs.get("overrides", {}))
    ctx = runner.context(variant.suite)
    stages = Stages(ctx, runner.store, cfg.seed, eval_splits=VALIDATION, log=runner.log)
    row = variant.strategy().search_row(stages, variant.params, cfg.row)
    files = (row.predictions or {}).get("validation") or {}
    suite = variant.suite
    if objective.kind == "task":
        terms = [(objective.task, objective.metric, 1.0)]
    elif objective.kind == "mean":
        dirs = directions(list(suite.tasks))
        prim = list(primaries(list(suite.tasks)).items())
        mixed = objective.direction == "maximize" and any(dirs[k] == "min" for k in prim)
        terms = [(t, m, (-1.0 if mixed and dirs[(t, m)] == "min" else 1.0) / len(prim)) for t, m in prim]
    elif objective.kind == "delta_m":
        base = runner.baseline
        if not base:
            return "the separate baseline of delta_m is not loaded"
        dirs = directions(list(suite.tasks))  # per-label results (f1@label) are not in Δm%
        keys = [(t, m) for t, m in dirs if m in base.get(t, {})]
        per_task = {t: sum(1 for k in keys if k[0] == t) for t, _ in keys}
        terms = [(t, m, (100.0 / len(per_task)) / per_task[t] * (-1.0 if dirs.get((t, m)) == "min" else 1.0)
                  / abs(base[t][m])) for t, m in keys if base[t][m] != 0]
    else:
        return f"objective {objective.spec} has no per-example scores"
    single = suite.kind == "single_input"
    parts, examples = [], {}
    for task, metric, weight in terms:
        if task not in files:
            return f"trial #{trial.number} kept no validation predictions of task {task!r}"
        ratios = recipes_of(task_kind(suite.task(task)).record_spec())  # ratio-of-sums metrics read stats
        parts_ = ("target", "stats" if metric in ratios else "pred", "id")
        with np.load(runner.store.root / files[task]) as z:
            target, pred, ids = (z[f"validation/{task}/{k}"] for k in parts_)
        order = np.argsort(ids, kind="stable")
        examples[task] = len(ids)
        s = twolevel.Scores.of(ratios.get(metric, metric), target[order], pred[order][None], seeds=(cfg.seed,),
                               space="inputs" if single else task)
        parts.append((weight, s))
    return twolevel.Scores.weighted(parts), examples


def margin_text(m: dict[str, Any]) -> str:
    """One line for the summary: the margin, its interval, what the interval covers, and what it means."""
    sign = "+" if m["value"] >= 0 else ""
    text = f"best − baseline ({m['objective']}, validation): {sign}{m['value']:.4f}"
    if m.get("lo") is None:
        return text + (f" ({m['note']})" if m.get("note") else "")
    counts = set((m.get("examples") or {}).values())
    n = f"{counts.pop():,} examples per task" if len(counts) == 1 else "the validation examples"
    inside = m["lo"] <= 0 <= m["hi"]
    verdict = ("not distinguishable from the baseline on this validation set" if inside
               else "beyond the validation-set noise")
    return (f"{text} [{m['lo']:+.4f}, {m['hi']:+.4f}], {100 * m['level']:g}% interval over {n} (p = {m['p']:.2g}): "
            f"{verdict}; one seed, so training noise is not included, and the best of {m['trials']} trials is an "
            f"optimistic pick: confirm with `bench run params=best.yaml seeds=3`")


def _costs(cfg: SearchConfig, trials) -> dict[str, Any]:
    """How much the trials cost: new trainings, and for fusion trials the time per trial vs one evaluation pass."""
    done = [t.user_attrs.get("cost", {}) for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    every = [t.user_attrs.get("cost", {}) for t in trials]
    costs: dict[str, Any] = {
        "new_trainings": sum(int(c.get("new_trainings", 0)) for c in every),
        "new_stages": sum(len(c.get("new_stages", [])) for c in every),
        "mean_trial_seconds": _mean([c.get("seconds") for c in done]),
    }
    if cfg.space.mode == "fuse":
        costs["mean_fuse_seconds"] = _mean([c.get("fuse_seconds") for c in done])
        costs["mean_eval_seconds"] = _mean([c.get("eval_seconds") for c in done])
        if costs["mean_trial_seconds"] and costs["mean_eval_seconds"]:
            costs["trial_over_eval"] = costs["mean_trial_seconds"] / costs["mean_eval_seconds"]
    return costs


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(vals) / len(vals) if vals else None


def _plots(cfg: SearchConfig, study, folder: Path) -> tuple[list[Path], list[str]]:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and in workers
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    multi = len(cfg.objectives) > 1
    # multi-objective studies: history, importances and coordinates follow the first objective
    tgt = {"target": (lambda t: t.values[0]), "target_name": cfg.objectives[0].spec} if multi else \
        {"target_name": cfg.objectives[0].spec}
    jobs = [("history", lambda: ovm.plot_optimization_history(study, **tgt)),
            ("importances", lambda: ovm.plot_param_importances(study, **tgt)),
            ("parallel_coordinate", lambda: ovm.plot_parallel_coordinate(study, **tgt))]
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        jobs.append(("intermediate_values", lambda: ovm.plot_intermediate_values(study)))
    if multi and len(cfg.objectives) <= 3:
        jobs.append(("pareto_front", lambda: ovm.plot_pareto_front(
            study, target_names=[o.spec for o in cfg.objectives])))
    written, skipped = [], []
    for name, make in jobs:
        try:
            ax = make()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(folder / f"{name}.png")
        except Exception as e:  # e.g. importances need 2+ distinct complete trials; a plot never fails a search
            skipped.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            plt.close("all")
    return written, skipped
