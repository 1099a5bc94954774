"""``bench search``: tune a strategy's knobs (static λ, fusion weights, task-arithmetic λ, TIES k, learning rate)
with Optuna, on the validation split only, reusing everything the store holds.

    python -m bench search suite=synthetic strategy=naive_mtl space=lambda trials=30
    python -m bench search suite=text strategy=fuse_then_joint space=fusion_weights trials=20 workers=2
    python -m bench run params=results/synthetic/search/synthetic-naive_mtl-lambda/best.yaml seeds=3

Parts: :mod:`~bench.search.space` (YAML spaces -> suggestions), :mod:`~bench.search.objective` (one trial: stages
on validation, objectives, pruning), :mod:`~bench.search.storage` (storage URLs, heartbeats),
:mod:`~bench.search.driver` (resumable loop, K worker processes), :mod:`~bench.search.outputs` (best.yaml, CSV,
plots). The user guide is docs/search.md.
"""

from __future__ import annotations

import sys

from bench.search.storage import redact


def search_command(args: list[str], out=None) -> int:
    """The CLI entry point. Everything is validated before the storage is opened; a BenchError becomes one line
    and exit code 2 (bench.cli), with any existing study untouched."""
    out = out or sys.stdout
    from bench.search.config import load_config
    from bench.search.driver import (
        Progress,
        counts,
        finished,
        launch_workers,
        open_study,
        quiet_optuna,
        run_loop,
        run_workers,
    )
    from bench.search.objective import TrialRunner
    from bench.search.storage import open_storage

    cfg = load_config(args)
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    quiet_optuna()
    storage = open_storage(cfg.storage, cfg.heartbeat)
    study = open_study(cfg, storage)

    if cfg.worker is not None:  # a process started by workers=K: run trials, report through the storage only
        runner = TrialRunner(cfg)
        runner.prepare()
        try:
            run_loop(cfg, study, runner)
        except KeyboardInterrupt:
            return 130
        return 0

    c = counts(study)
    objective = ", ".join(f"{o.spec} ({o.direction})" for o in cfg.objectives)
    print(f"bench search: study {cfg.study!r} in {redact(cfg.storage)}", file=out)
    print(f"  {cfg.strategy.name} on {cfg.suite.name}, space {cfg.space.name!r} ({cfg.space.mode} trials: "
          f"{', '.join(cfg.space.params)}), objective {objective} on validation, pruner "
          f"{cfg.pruner if len(cfg.objectives) == 1 else 'none (multi-objective)'}", file=out)
    if finished(c):
        print(f"  resuming: {finished(c)} of {cfg.trials} trials already finished "
              f"({c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed)", file=out)
    print(f"  dashboard: optuna-dashboard {redact(cfg.storage)}", file=out, flush=True)

    runner = TrialRunner(cfg)
    prepared = runner.prepare()
    if prepared:
        print(f"prepared {len(prepared)} shared stage(s) before the trials (fine-tunes of `separate`): "
              f"{', '.join(prepared)}", file=out, flush=True)

    progress = Progress(cfg, study, out)
    rc = 0
    try:
        if finished(counts(study)) < cfg.trials:
            if cfg.launcher is not None and cfg.launcher.name != "local":
                rc = launch_workers(cfg, progress, out)
                if not cfg.launcher.common.wait:
                    return rc
            elif cfg.workers == 1:
                run_loop(cfg, study, runner, progress)
            else:
                rc = run_workers(cfg, study, progress, out)
    except KeyboardInterrupt:
        n = finished(counts(study))
        print(f"interrupted after {n} of {cfg.trials} trials; rerun the same command to run the remaining "
              f"{cfg.trials - n}", file=out, flush=True)
        _report(cfg, study, out, plots=False)
        return 130
    n = finished(counts(study))
    _report(cfg, study, out, plots=cfg.plots, runner=runner)
    if n < cfg.trials:
        print(f"the study has {n} of {cfg.trials} finished trials; rerun the same command to finish it", file=out)
        return 1
    return rc


def _report(cfg, study, out, plots: bool, runner=None) -> None:
    """The summary; with ``runner`` the best trial's margin over the baseline trial gets its interval (re-scoring
    both from the store)."""
    from bench.search.outputs import margin_text, write_outputs

    res = write_outputs(cfg, study, plots, runner=runner)
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(res["counts"].items()))
    print(f"study {cfg.study!r}: {counts}", file=out)
    costs = res["costs"]
    print(f"new trainings during the search (fine-tunes + joint runs): {costs['new_trainings']}", file=out)
    if cfg.space.mode == "fuse" and costs.get("mean_trial_seconds") is not None:
        ratio = f" = {costs['trial_over_eval']:.2f}x one evaluation pass" if costs.get("trial_over_eval") else ""
        print(f"fusion trials: {costs['mean_trial_seconds']:.2f}s each (fuse {costs['mean_fuse_seconds'] or 0:.2f}s, "
              f"validation pass {costs['mean_eval_seconds'] or 0:.2f}s){ratio}", file=out)
    if "best" in res:
        b = res["best"]
        vals = ", ".join(f"{o.spec}={v:.4f}" for o, v in zip(cfg.objectives, b.values))
        print(f"best trial #{b.number}: {vals} with {_short(b.user_attrs.get('overrides', {}))}", file=out)
        if res.get("baseline") is not None:
            base = res["baseline"]
            bvals = ", ".join(f"{o.spec}={v:.4f}" for o, v in zip(cfg.objectives, base.values))
            print(f"baseline trial #{base.number} (the space's defaults): {bvals}", file=out)
            if res.get("margin") is not None:
                print(margin_text(res["margin"]), file=out)
        if "pareto" in res:
            print(f"Pareto set: {len(res['pareto'])} trial(s): {res['dir'] / 'pareto.csv'}", file=out)
        print(f"best params: {res['best_yaml']}\n  tuned row: python -m bench run params={res['best_yaml']}",
              file=out)
    if "trials_csv" in res:
        print(f"trials: {res['trials_csv']}", file=out)
    if res["plots"]:
        print(f"plots: {', '.join(p.name for p in res['plots'])} in {res['plots'][0].parent}", file=out)
    for s in res["skipped_plots"]:
        print(f"plot skipped: {s}", file=out)
    print(f"dashboard: optuna-dashboard {redact(cfg.storage)}", file=out, flush=True)


def _short(overrides: dict) -> str:
    def fmt(v):
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in overrides.items())
