"""Launchers: any launcher and any worker count gives the records of a serial run, computes no shared stage twice,
and survives a job killed with SIGKILL; bad launcher input is one line and exit 2 with nothing submitted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from bench.cli import main
from tests.conftest import FAST, REPO, records, run_cli

pytestmark = pytest.mark.slow

SEARCH = [a for a in FAST if a != "report=false"] + ["strategy=naive_mtl", "space=lambda"]
# three strategies that share stages: fuse_then_joint reuses separate's fine-tunes (same seed, same key)
MATRIX = [*FAST, "strategy=separate,naive_mtl,fuse_then_joint", "seeds=2"]


def metrics_by_cell(results: Path) -> dict[str, dict]:
    return {r["cell"]: {row: v["metrics"] for row, v in r["rows"].items()} for r in records(results)}


def stage_folders(results: Path) -> set[str]:
    return {f"{p.parent.parent.name}/{p.parent.name}" for p in results.glob("*/stages/*/*/stage.json")}


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "results"
    r = run_cli("run", *MATRIX, f"results_dir={out}")
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def assert_same_as_serial(results: Path, serial: Path, interrupted: bool = False) -> list[dict]:
    mine, theirs = metrics_by_cell(results), metrics_by_cell(serial)
    assert len(theirs) == 6 and mine.keys() == theirs.keys()
    for cell in theirs:
        assert mine[cell] == theirs[cell], cell  # bit-identical metrics, row by row
    recs = records(results)
    computed = Counter(k for r in recs for k in r["stages_computed"])
    assert computed and max(computed.values()) == 1, computed  # no stage computed twice
    # every stage was computed by some cell (after an interruption, also by a cell that never finished)
    assert set(computed) <= stage_folders(results) if interrupted else set(computed) == stage_folders(results)
    return recs


def test_two_local_workers_give_the_serial_records(serial, tmp_path):
    out = tmp_path / "results"
    r = run_cli("run", *MATRIX, f"results_dir={out}", "workers=2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "with launcher=local, 2 at a time" in r.stdout and "running" in r.stdout
    recs = assert_same_as_serial(out, serial)
    assert len({rec["runtime"]["pid"] for rec in recs}) == 2  # both workers ran cells
    assert {rec["runtime"]["torch_threads"] for rec in recs} == {max(1, (os.cpu_count() or 1) // 2)}
    logs = list(out.glob("synthetic/launcher/local-*/*.log"))
    assert len(logs) == 6  # one log per job, kept with the suite's results


def _job_processes(launcher_dir: Path) -> list[psutil.Process]:
    """The processes of submitit_local jobs that still run (their folders are named by the job's pid)."""
    procs = []
    for d in launcher_dir.glob("*"):
        if d.name.isdigit() and psutil.pid_exists(int(d.name)):
            try:
                procs.append(psutil.Process(int(d.name)))
            except psutil.NoSuchProcess:
                pass
    return procs


def test_submitit_local_gives_the_serial_records_and_survives_a_killed_job(serial, tmp_path):
    out = tmp_path / "results"
    args = ["run", *MATRIX, f"results_dir={out}", "launcher=submitit_local", "workers=2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # kill one job's processes with SIGKILL (as an OOM killer would) once the first cell is done and the next
    # job has started: the newest job, which has its cell ahead of it
    deadline, victim = time.time() + 120, None
    while victim is None and time.time() < deadline and proc.poll() is None:
        if list(out.glob("synthetic/cells/*/*/record.json")):
            running = sorted(_job_processes(out / "synthetic" / "launcher"), key=lambda p: p.create_time())
            if running and time.time() - running[-1].create_time() < 2:
                victim = running[-1]
                for p in [*victim.children(recursive=True), victim]:
                    p.send_signal(signal.SIGKILL)
        time.sleep(0.05)
    stdout, _ = proc.communicate(timeout=300)
    assert victim is not None, stdout
    assert proc.returncode == 1, stdout  # the killed cell failed; every other cell finished
    failed = list(out.glob("synthetic/cells/*/*/failed.json"))
    assert len(failed) == 1, stdout
    reason = json.loads(failed[0].read_text())
    assert "ended without a result" in reason["error"] and reason["job_id"] == str(victim.pid)
    assert "FAILED: job" in stdout and len(records(out)) == 5
    before = {r["cell"]: r["created"] for r in records(out)}
    stages_before = stage_folders(out)

    r = run_cli(*args)  # the same command again: only the killed cell runs
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 cell(s) computed, 5 from the store, 0 failed" in r.stdout
    recs = assert_same_as_serial(out, serial, interrupted=True)
    assert {r["cell"]: r["created"] for r in recs if r["cell"] in before} == before  # nothing finished was rerun
    rerun = [rec for rec in recs if rec["cell"] not in before]
    assert len(rerun) == 1 and not set(rerun[0]["stages_computed"]) & stages_before  # no finished stage retrained
    assert not list(out.glob("synthetic/cells/*/*/failed.json"))


def test_search_workers_through_submitit_local(tmp_path):
    out = tmp_path / "results"
    r = run_cli("search", *SEARCH, "trials=4", "pruner=none", "plots=false",
                f"results_dir={out}", "launcher=submitit_local", "workers=2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "starting 2 search worker(s) with launcher=submitit_local" in r.stdout
    import optuna

    study = optuna.load_study(study_name="synthetic-naive_mtl-lambda",
                              storage=f"sqlite:///{out}/synthetic/search/optuna.db")
    trials = study.get_trials(deepcopy=False)
    assert Counter(t.state.name for t in trials) == {"COMPLETE": 4}
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both submitted workers ran trials
    assert len([d for d in (out / "synthetic" / "launcher").iterdir() if d.name.isdigit()]) == 2


@pytest.mark.parametrize("args,needle", [
    (["launcher=slrum"], "unknown launcher 'slrum' (did you mean 'slurm'?)"),
    (["workers=0"], "workers=0 must be a positive integer"),
    (["workers=two"], "workers='two' must be a positive integer"),
    (["devices=[0]"], "devices=[0]: this machine has no CUDA GPU; leave devices out to run on the CPU"),
    (["devices=0"], "devices=0 must be a list of GPU ids, e.g. devices=[0,1]"),
    (["wait=false"], "wait=false needs a scheduler"),
    (["launcher=submitit_local", "wait=false"], "wait=false needs a scheduler"),
    (["launcher.partition=gpu"], "launcher.partition is a key of launcher=slurm; launcher=local takes no launcher.* keys"),
    (["launcher=submitit_local", "launcher.max_parallel=2"], "launcher.max_parallel is a key of launcher=slurm; "
                                                              "launcher=submitit_local takes launcher.timeout_min"),
    (["launcher=submitit_local", "launcher.timeout_mni=2"], "unknown key 'timeout_mni' (did you mean 'timeout_min'?)"),
    (["launcher=slurm", "launcher.cpus_per_task=0"], "launcher=slurm: cpus_per_task=0"),
    (["launcher=slurm"], "launcher=slurm needs SLURM's sbatch, which is not on PATH here"),
    (["launcher=submitit_local", "workers=1,2"], "workers: a "),
])
@pytest.mark.parametrize("command", ["run", "search"])
def test_bad_launcher_input_is_one_line_and_nothing_is_submitted(tmp_path, monkeypatch, capsys, command, args,
                                                                 needle):
    if needle.startswith("devices=[0]") and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "results"
    base = FAST if command == "run" else SEARCH
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on PATH
    code = main([command, *base, f"results_dir={out}", *args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert needle in lines[0], lines[0]
    assert not out.exists()  # nothing planned was written, nothing submitted


def test_a_preempted_job_is_requeued_and_resumes_mid_cell(tmp_path):
    """SIGUSR2 is what SLURM (and submitit's local executor) sends before a preemption or a time limit: the job
    requeues itself, and the cell resumes its training stage from the last epoch instead of starting over."""
    one = ["suite=synthetic", "train.epochs=8", "train.max_train_samples=400", "report=false", "strategy=naive_mtl"]
    out, ref = tmp_path / "results", tmp_path / "reference"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", *one, f"results_dir={out}",
                             "launcher=submitit_local"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline, signalled = time.time() + 120, None
    while signalled is None and time.time() < deadline and proc.poll() is None:
        if list(out.glob("synthetic/stages/joint/*/resume.safetensors")):  # an epoch of the joint stage is done
            for job in _job_processes(out / "synthetic" / "launcher"):
                for task in job.children():
                    task.send_signal(signal.SIGUSR2)
                    signalled = task.pid
        time.sleep(0.02)
    stdout, _ = proc.communicate(timeout=300)
    assert signalled is not None and proc.returncode == 0, stdout
    logs = "".join(p.read_text() for p in out.glob("synthetic/launcher/*/*_log.err"))
    assert "resumed after epoch" in logs, logs[-2000:]
    r = run_cli("run", *one, f"results_dir={ref}")  # the same cell, never interrupted
    assert r.returncode == 0, r.stdout + r.stderr
    assert metrics_by_cell(out) == metrics_by_cell(ref)


def test_ctrl_c_stops_every_worker_with_one_message_and_a_rerun_finishes(serial, tmp_path):
    out = tmp_path / "results"
    args = ["run", *MATRIX, f"results_dir={out}", "workers=2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline, workers = time.time() + 120, []
    while time.time() < deadline and proc.poll() is None and not list(out.glob("synthetic/cells/*/*/record.json")):
        time.sleep(0.02)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "resource_tracker" not in " ".join(p.cmdline())]  # forked or spawned workers, not the tracker
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines() == ["interrupted: finished cells and stages are kept; rerun the same command "
                                           "to resume"], stderr  # no traceback, no worker's noise
    assert workers and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_as_serial(out, serial, interrupted=True)
