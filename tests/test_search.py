"""``bench search`` on the synthetic suite, with real Optuna storages (SQLite, journal) and real worker processes.

Budget: every trial trains at most a 2-epoch MLP (or nothing, for fusion trials), one torch thread per process.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from tests.conftest import REPO, records

FAST = ["suite=synthetic", "train.epochs=2", "threads=1"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "BENCH_PROGRESS": "0"}


def search(*args: str) -> int:
    return main(["search", *FAST, *args])


def spawn(*args: str) -> subprocess.Popen:
    # SIGINT back to its default in the child: a child inherits an ignored SIGINT (a library in the test session
    # can leave it ignored), and Python then never installs its KeyboardInterrupt handler
    return subprocess.Popen([sys.executable, "-m", "bench", "search", *FAST, *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def load(storage: str, study: str):
    import optuna

    from bench.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=study, storage=open_storage(storage, heartbeat=1))


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def finished(study) -> int:
    s = states(study)
    return s.get("COMPLETE", 0) + s.get("PRUNED", 0)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A results folder where `separate` already ran (the fine-tunes every fusion trial reuses)."""
    import torch

    from bench.runner import execute, make_plan

    torch.set_num_threads(1)  # as every search in this file (threads=1): 2 threads on 2 busy cores are far slower

    results = tmp_path_factory.mktemp("search") / "results"
    # execute() directly with its own output: its default stream is bound at import time (pytest closes it)
    plan = make_plan(["suite=synthetic", "strategy=separate", "train.epochs=2", f"results_dir={results}",
                      "report=false"])
    assert execute(plan, out=io.StringIO()) == 0
    return results


def stage_dirs(results: Path, kind: str) -> set[str]:
    return {p.name for p in (results / "synthetic" / "stages" / kind).glob("*")}


# ------------------------------------------------------------------------------------------------ spaces

@pytest.mark.integration
def test_simplex_sampling_is_on_the_simplex_and_its_centre_is_equal():
    import optuna

    from bench.search.space import load_space
    from bench.strategy import default_dirs

    space = load_space("lambda", "naive_mtl", default_dirs())
    tasks = ["a", "b", "c"]
    raw = space.default_trial(tasks)
    assert space.suggest(optuna.trial.FixedTrial(raw), tasks)["strategy.weights"] == pytest.approx([1, 1, 1])
    w = space.suggest(optuna.trial.FixedTrial({f"strategy.weights[{t}]": u for t, u in zip(tasks, [0.9, 0.1, 1.0])}),
                      tasks)["strategy.weights"]
    assert sum(w) == pytest.approx(3) and min(w) == 0.0 and w[1] > w[0]  # u = 1 -> weight 0; small u -> large
    fusion = load_space("fusion_weights", "fuse_then_joint", default_dirs())
    assert sum(fusion.suggest(optuna.trial.FixedTrial(fusion.default_trial(tasks)), tasks)[
        "strategy.fusion_params.weights"]) == pytest.approx(1)


# ------------------------------------------------------------------------------------------------ λ search

@pytest.mark.integration
def test_lambda_search_starts_from_equal_and_the_tuned_row_reaches_the_leaderboard(tmp_path, capsys):
    results = tmp_path / "results"
    assert search("strategy=naive_mtl", "space=lambda", "trials=14", f"results_dir={results}", "plots=false") == 0
    out = capsys.readouterr().out
    study = load(f"sqlite:///{results}/synthetic/search/optuna.db", "synthetic-naive_mtl-lambda")
    assert finished(study) == 14
    # no trial read the test split
    for stage in (results / "synthetic" / "stages" / "joint").glob("*/stage.json"):
        assert set(json.loads(stage.read_text())["metrics"]) == {"validation"}
    # the reference: `equal` weighting as `bench run` trains it, scored on validation the same way
    assert main(["run", "suite=synthetic", "strategy=naive_mtl", "train.epochs=2", f"results_dir={results}",
                 "report=false"]) == 0
    (equal,) = [r for r in records(results) if r["label"] == "naive_mtl"]
    val = equal["rows"]["naive_mtl"]["metrics"]["validation"]
    prim = {t: info["primary"] for t, info in equal["tasks"].items()}
    equal_mean = sum(val[t][m] for t, m in prim.items()) / len(prim)
    # seeds are paired, so the space's centre (trial #0, static λ = 1) *is* the equal-weights model, to the bit; the
    # search can only keep or beat it (on 14 trials of this tiny budget it may not find better)
    centre = study.trials[0]
    assert centre.user_attrs["overrides"]["strategy.weights"] == pytest.approx([1] * 5)
    assert centre.value == equal_mean, (centre.value, equal_mean, out)
    assert study.best_value >= equal_mean
    weights = study.best_trial.user_attrs["overrides"]["strategy.weights"]
    assert sum(weights) == pytest.approx(5)

    best = results / "synthetic" / "search" / "synthetic-naive_mtl-lambda" / "best.yaml"
    assert main(["run", f"params={best}", "report=false"]) == 0
    tuned = [r for r in records(results) if r["label"] == "naive_mtl[tuned:lambda]"]
    assert len(tuned) == 1 and tuned[0]["params"]["weights"] == pytest.approx(weights)
    assert "test" in tuned[0]["rows"]["naive_mtl"]["metrics"]  # the leaderboard row has its test numbers
    assert tuned[0]["stages_reused"] >= 1  # the best trial's joint training was reused, not repeated
    # one code path: the run's row has the best trial's validation metrics, to the bit
    val = tuned[0]["rows"]["naive_mtl"]["metrics"]["validation"]
    assert {t: val[t][m] for t, m in prim.items()} == study.best_trial.user_attrs["validation"]


# ------------------------------------------------------------------------------------------------ fusion search

@pytest.mark.integration
def test_fusion_search_trains_nothing(store, capsys):
    before = {k: stage_dirs(store, k) for k in ("finetune", "joint")}
    assert search("strategy=fuse_then_joint", "space=fusion_weights", "trials=8", f"results_dir={store}") == 0
    out = capsys.readouterr().out
    assert {k: stage_dirs(store, k) for k in ("finetune", "joint")} == before
    assert "new trainings during the search (fine-tunes + joint runs): 0" in out
    folder = store / "synthetic" / "search" / "synthetic-fuse_then_joint-fusion_weights"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["costs"]["new_trainings"] == 0 and summary["states"] == {"COMPLETE": 8}
    assert summary["costs"]["mean_eval_seconds"] > 0
    for name in ("history", "importances", "parallel_coordinate"):
        assert (folder / "plots" / f"{name}.png").stat().st_size > 1000
    assert (folder / "trials.csv").read_text().count("\n") == 9
    for stage in (store / "synthetic" / "stages" / "evaluate").glob("*/stage.json"):
        assert set(json.loads(stage.read_text())["metrics"]) == {"validation"}  # the test split is never read
    best = yaml.safe_load((folder / "best.yaml").read_text())["overrides"]
    assert best["strategy.fusion"] == "weighted" and len(best["strategy.fusion_params.weights"]) == 5
    # each trial fused in memory and evaluated that model: no fused checkpoint (or evaluate stage) was written
    assert not (store / "synthetic" / "stages" / "fuse").exists()
    assert summary["costs"]["mean_fuse_seconds"] > 0


@pytest.mark.integration
def test_multi_objective_returns_the_pareto_set(store, capsys):
    assert search("strategy=fuse_then_joint", "space=task_arithmetic", "trials=6", f"results_dir={store}",
                  "objective=[delta_m,task:clean:mse]", "plots=false", "keep_checkpoints=true") == 0
    folder = store / "synthetic" / "search" / "synthetic-fuse_then_joint-task_arithmetic-delta_m+task_clean_mse"
    study = load(f"sqlite:///{store}/synthetic/search/optuna.db", folder.name)
    kept = [f for f in (store / "synthetic" / "stages" / "fuse").glob("*/stage.json")]
    assert len(kept) == len({json.dumps(t.user_attrs["overrides"], sort_keys=True) for t in study.trials}) >= 5
    pareto = (folder / "pareto.csv").read_text().splitlines()
    assert pareto[0].startswith("trial,delta_m,task:clean:mse") and len(pareto) >= 2
    assert len(list((folder / "pareto").glob("trial_*.yaml"))) == len(pareto) - 1
    assert "Pareto set" in capsys.readouterr().out


@pytest.mark.integration
def test_a_fusion_search_best_params_run_gives_the_trials_metrics(store, capsys):
    """`bench run params=best.yaml` after a fusion-weight search: the same row as the best trial (it used to crash
    re-evaluating the evaluate stage's own folder, which holds no weights)."""
    # trials fuse in memory (nothing written); the run fuses into a stage and evaluates it from disk: same numbers
    assert search("strategy=fuse_then_joint", "space=task_arithmetic", "trials=3", f"results_dir={store}",
                  "plots=false") == 0
    study = load(f"sqlite:///{store}/synthetic/search/optuna.db", "synthetic-fuse_then_joint-task_arithmetic")
    best = store / "synthetic" / "search" / "synthetic-fuse_then_joint-task_arithmetic" / "best.yaml"
    assert main(["run", f"params={best}", "report=false"]) == 0, capsys.readouterr().err
    (tuned,) = [r for r in records(store) if r["label"] == "fuse_then_joint[tuned:task_arithmetic]"]
    val = tuned["rows"]["fused"]["metrics"]["validation"]
    prim = {t: info["primary"] for t, info in tuned["tasks"].items()}
    assert {t: val[t][m] for t, m in prim.items()} == study.best_trial.user_attrs["validation"]
    assert "test" in tuned["rows"]["fused"]["metrics"]


# ------------------------------------------------------------------------------------------------ workers

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_one_study(store, tmp_path, kind):
    storage = f"sqlite:///{tmp_path}/w.db" if kind == "sqlite" else f"journal:{tmp_path}/w.log"
    # trials that train for a few seconds each: with 40 ms fusion trials one worker can finish the whole study
    # while the other is still importing torch, and the test would measure start-up order rather than sharing
    p = spawn("strategy=naive_mtl", "space=lambda", "trials=6", "train.epochs=16", "pruner=none", "workers=2",
              f"storage={storage}", "study=w", f"results_dir={store}", "plots=false")
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 0, out
    study = load(storage, "w")
    trials = study.get_trials(deepcopy=False)
    assert states(study) == {"COMPLETE": 6}, out
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both processes ran trials


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried(tmp_path):
    # the journal storage: its heartbeat is bench's own (RDB storages use Optuna's, with the same retry callback)
    storage = f"journal:{tmp_path}/k.log"
    args = ["strategy=naive_mtl", "space=lambda", "trials=3", "workers=2", f"storage={storage}", "study=k",
            f"results_dir={tmp_path / 'results'}", "train.epochs=12", "pruner=none", "heartbeat=1", "plots=false"]
    p = spawn(*args)
    victim, deadline = None, time.time() + 60
    while victim is None and time.time() < deadline:  # a trial that has started training in some worker
        try:
            running = [t for t in load(storage, "k").get_trials(deepcopy=False) if t.state.name == "RUNNING"
                       and "overrides" in t.user_attrs]
        except Exception:  # the study is not created yet
            running = []
        if running:
            victim = running[0]
        time.sleep(0.05)
    assert victim is not None
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    out, _ = p.communicate(timeout=120)
    assert "killed by signal 9" in out, out
    study = load(storage, "k")
    assert finished(study) == 3, out
    killed = study.trials[victim.number]
    assert killed.state.name == "FAIL"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state.name for t in retries] == ["COMPLETE"]
    assert retries[0].params == killed.params


@pytest.mark.slow
def test_ctrl_c_then_rerun_resumes(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/i.db"
    args = ["strategy=naive_mtl", "space=lambda", "trials=8", f"storage={storage}", "study=i",
            f"results_dir={tmp_path / 'results'}", "train.epochs=8", "pruner=none", "plots=false"]
    p = spawn(*args)
    # interrupt as soon as the search reports its first finished trial (its own progress line)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith("[1/"):
            break
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=60)
    out = "".join(seen) + rest
    assert p.returncode == 130, out
    assert "rerun the same command" in out and "Traceback" not in out
    done = finished(load(storage, "i"))
    assert 1 <= done < 8
    n_before = len(load(storage, "i").trials)
    capsys.readouterr()
    # the rerun, in this process (saves a start-up); a speed knob may differ without forking the study
    assert search(*args, "threads=1", "train.num_workers=2") == 0
    out = capsys.readouterr().out
    assert f"resuming: {done} of 8 trials already finished" in out
    study = load(storage, "i")
    assert finished(study) == 8
    assert len(study.trials) == n_before + (8 - done)  # only the remaining trials ran


# ------------------------------------------------------------------------------------------------ bad input

@pytest.fixture
def existing(tmp_path) -> tuple[Path, list[str]]:
    """A study with one trial, which no bad command may touch."""
    args = ["strategy=naive_mtl", "space=lambda", "trials=1", "study=keep", f"results_dir={tmp_path / 'r'}",
            "train.epochs=1", "plots=false"]
    assert search(*args) == 0
    return tmp_path, args


def _space_file(tmp_path: Path, params: dict, **extra) -> str:
    path = tmp_path / f"bad{len(list(tmp_path.glob('bad*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"params": params, **extra}))
    return f"space={path}"


@pytest.mark.integration
@pytest.mark.parametrize("case", ["no_such_param", "empty_range", "wrong_fusion_param", "unreachable_storage",
                                  "other_search_same_study", "bad_objective", "not_a_bool"])
def test_bad_input_is_one_line_exit_2_and_leaves_the_study_alone(existing, capsys, case):
    tmp_path, args = existing
    storage = f"sqlite:///{tmp_path}/r/synthetic/search/optuna.db"
    before = load(storage, "keep")
    snapshot = (len(before.trials), before.user_attrs, before.trials[0].params)
    capsys.readouterr()
    base = [a for a in args if not a.startswith(("space=", "strategy="))]
    bad = {
        "no_such_param": [*base, "strategy=naive_mtl",
                          _space_file(tmp_path, {"strategy.wieghts": {"type": "simplex"}})],
        "empty_range": [*base, "strategy=naive_mtl",
                        _space_file(tmp_path, {"train.lr": {"type": "float", "low": 0.1, "high": 0.01}})],
        "wrong_fusion_param": [*base, "strategy=fuse_then_joint", _space_file(
            tmp_path, {"strategy.fusion_params.k": {"type": "float", "low": 5, "high": 50}},
            fixed={"strategy.fusion": "task_arithmetic"}, mode="fuse")],
        "unreachable_storage": [*args, "storage=postgresql://nohost/db"],
        "other_search_same_study": [*base, "strategy=naive_mtl", "space=lr"],
        "bad_objective": [*args, "objective=task:nope"],
        "not_a_bool": [*args, "keep_checkpoints=yes"],
    }[case]
    code = search(*bad)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    expect = {"no_such_param": "has no parameter 'wieghts' (did you mean 'weights'?)", "empty_range": "empty range",
              "wrong_fusion_param": "unknown key 'k'", "unreachable_storage": "cannot open storage postgresql://nohost",
              "other_search_same_study": "created by a different search", "bad_objective": "has no task 'nope'",
              "not_a_bool": "keep_checkpoints='yes' must be true or false"}[case]
    assert expect in lines[0], lines[0]
    assert "space 'bad" in lines[0] or case in ("unreachable_storage", "other_search_same_study", "bad_objective",
                                                      "not_a_bool")
    after = load(storage, "keep")
    assert (len(after.trials), after.user_attrs, after.trials[0].params) == snapshot
    assert not math.isnan(after.best_value)
