"""The run store: determinism, cache reuse, crash safety (SIGKILL), stage resume, locking, failing cells."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.runner import execute, make_plan
from tests.conftest import FAST, REPO, records, run_cli


def _run(results: Path, *extra: str) -> tuple[int, str]:
    import io

    buf = io.StringIO()
    code = execute(make_plan([*FAST, f"results_dir={results}", *extra]), out=buf)
    return code, buf.getvalue()


def _metrics(recs):
    return {(r["label"], r["seed"]): r["rows"] for r in recs}


@pytest.mark.integration
def test_same_seed_same_numbers(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(a, "strategy=separate,naive_mtl")[0] == 0
    assert _run(b, "strategy=separate,naive_mtl")[0] == 0
    ma, mb = _metrics(records(a)), _metrics(records(b))
    assert ma.keys() == mb.keys() and len(ma) == 2
    for k in ma:
        for variant in ma[k]:
            assert ma[k][variant]["metrics"] == mb[k][variant]["metrics"]
    # a different seed gives different numbers (the seed really reaches the model)
    _run(a, "strategy=naive_mtl", "seed=5")
    m5 = [r for r in records(a) if r["seed"] == 5][0]["rows"]["naive_mtl"]["metrics"]
    assert m5 != ma[("naive_mtl", 0)]["naive_mtl"]["metrics"]


@pytest.mark.integration
def test_batch_workers_change_speed_not_results(tmp_path):
    # batches are chosen in the main process and only gathered by the workers: the same numbers, the same cell
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(a, "strategy=naive_mtl", "train.num_workers=0")[0] == 0
    assert _run(b, "strategy=naive_mtl", "train.num_workers=2")[0] == 0
    assert not multiprocessing.active_children()  # the workers ended with their trainer and evaluations
    ra, rb = records(a)[0], records(b)[0]
    assert ra["cell"] == rb["cell"]
    assert ra["rows"]["naive_mtl"]["metrics"] == rb["rows"]["naive_mtl"]["metrics"]
    assert ra["rows"]["naive_mtl"]["trajectories"] == rb["rows"]["naive_mtl"]["trajectories"]  # losses, every step logged
    code, out = _run(a, "strategy=naive_mtl", "train.num_workers=2")
    assert code == 0 and "0 cell(s) computed, 1 from the store" in out


@pytest.mark.integration
def test_second_run_trains_nothing_and_shares_finetunes(results):
    code, out = _run(results, "strategy=separate,naive_mtl", "seeds=2")
    assert code == 0 and "4 cell(s) computed" in out
    mtimes = {p: p.stat().st_mtime_ns for p in results.rglob("record.json")}
    code, out = _run(results, "strategy=separate,naive_mtl", "seeds=2")
    assert code == 0 and "0 cell(s) computed, 4 from the store" in out
    assert "every cell came from the store" in out
    assert {p: p.stat().st_mtime_ns for p in results.rglob("record.json")} == mtimes
    # fuse_then_joint reuses the fine-tunes separate made: only fuse, evaluate and joint are new
    finetunes = set((results / "synthetic/stages/finetune").iterdir())
    code, _ = _run(results, "strategy=fuse_then_joint")
    assert code == 0
    assert set((results / "synthetic/stages/finetune").iterdir()) == finetunes
    rec = [r for r in records(results) if r["strategy"] == "fuse_then_joint"][0]
    assert set(rec["rows"]) == {"fused", "fuse_then_joint"}
    reused = [s for s in rec["rows"]["fuse_then_joint"]["telemetry"]["stages"] if s["reused"]]
    assert len(reused) == 5  # the five per-task fine-tunes


@pytest.mark.integration
def test_force_recomputes_each_shared_stage_once(results):
    assert _run(results, "strategy=separate")[0] == 0
    before = {p: p.stat().st_mtime_ns for p in (results / "synthetic/stages/finetune").glob("*/stage.json")}
    code, out = _run(results, "strategy=separate,fuse_then_joint", "force=true")
    assert code == 0 and "2 cell(s) computed" in out
    after = {p: p.stat().st_mtime_ns for p in (results / "synthetic/stages/finetune").glob("*/stage.json")}
    assert after.keys() == before.keys() and all(after[p] != before[p] for p in before)  # retrained...
    ftj = [r for r in records(results) if r["strategy"] == "fuse_then_joint"][0]
    stages = ftj["rows"]["fuse_then_joint"]["telemetry"]["stages"]
    assert [s["reused"] for s in stages if s["stage"] == "finetune"] == [True] * 5  # ...once, by separate


@pytest.mark.slow
def test_a_lock_sweeps_what_killed_writers_left(tmp_path):
    from bench.store import Store

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    entry = tmp_path / "suite" / "stages" / "finetune" / "k"
    entry.mkdir(parents=True)
    (entry / f"backbone.safetensors.tmp{dead.pid}").write_bytes(b"torn")
    (entry / f"stage.json.tmp{os.getpid()}").write_text("{")  # a live writer's file is never touched
    with Store(tmp_path, "suite").lock(entry):
        assert sorted(p.name for p in entry.iterdir()) == [".lock", f"stage.json.tmp{os.getpid()}"]


@pytest.mark.integration
def test_record_has_provenance(results):
    _run(results, "strategy=naive_mtl")
    (rec,) = records(results)
    for key in ("seed", "data_fingerprint", "code_version", "params", "train", "versions", "tasks", "cell"):
        assert key in rec, key
    tel = rec["rows"]["naive_mtl"]["telemetry"]
    assert tel["train_samples_per_s"] > 0 and tel["peak_memory_mb"] > 0 and tel["memory_kind"] == "host_rss"
    assert rec["rows"]["naive_mtl"]["best_epoch"]
    assert set(rec["rows"]["naive_mtl"]["metrics"]) == {"validation", "test"}


@pytest.mark.integration
def test_text_record_counts_tokens(tmp_path):
    # the default suite on MiniLM, at a toy budget: tokens are the non-padding ones, so tokens per sample is a mean
    # example length, between 2 ([CLS] [SEP]) and max_length, in training and in evaluation alike
    import io

    plan = make_plan(["suite=text", "strategy=naive_mtl", "train.epochs=1", "train.max_train_samples=24",
                      "train.max_eval_samples=24", "report=false", f"results_dir={tmp_path}"])
    assert execute(plan, out=io.StringIO()) == 0
    (rec,) = records(tmp_path)
    tel = rec["rows"]["naive_mtl"]["telemetry"]
    max_length = plan.variants[0].suite.backbone.max_length
    for kind in ("train", "eval"):
        per_sample = tel[f"{kind}_tokens_per_s"] / tel[f"{kind}_samples_per_s"]
        assert 2 < per_sample <= max_length, (kind, per_sample)
    assert set(tel["step_breakdown_ms"]) == {"data", "forward", "weighting", "backward", "optimizer"}
    assert sum(tel["step_breakdown_ms"].values()) == pytest.approx(tel["step_time_ms"], rel=0.05)


def _kill_when(results: Path, pattern: str, *args: str, grace: float) -> None:
    """Start `bench run ARGS`, SIGKILL it ``grace`` seconds after a file matching ``pattern`` appears."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "bench", "run", *args, f"results_dir={results}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(results.rglob(pattern)):
        time.sleep(0.05)
    time.sleep(grace)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_completes(results):
    """Kill -9 while cells are running: no half-written record is ever read as complete; a rerun finishes the rest
    and does not retrain finished cells."""
    # 2 epochs (FAST's): a cell takes seconds, so 0.3 s after the first record the later cells are still to come
    _kill_when(results, "record.json", *FAST, "strategy=separate,naive_mtl", "seeds=3", grace=0.3)
    done_before = {p: p.stat().st_mtime_ns for p in results.rglob("record.json")}
    assert 1 <= len(done_before) < 6
    for p in done_before:
        json.loads(p.read_text())  # every record that exists is whole
    out = run_cli("run", *FAST, "strategy=separate,naive_mtl", "seeds=3", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    assert f"{len(done_before)} from the store" in out.stdout
    after = {p: p.stat().st_mtime_ns for p in results.rglob("record.json")}
    assert len(after) == 6
    assert all(after[p] == m for p, m in done_before.items())


@pytest.mark.slow
def test_interrupted_stage_resumes_from_its_last_epoch(results):
    # an epoch of 2,000 samples takes seconds: 0.5 s after the first epoch's resume file the stage is in its second
    # of 8 epochs, and the rerun trains the other 7 (not 39)
    _kill_when(results, "resume.safetensors", *FAST, "train.epochs=8", "train.max_train_samples=2000",
               "strategy=naive_mtl", grace=0.5)
    assert list(results.rglob("resume.safetensors")), "no epoch checkpoint was written"
    out = run_cli("run", *FAST, "train.epochs=8", "train.max_train_samples=2000", "strategy=naive_mtl",
                  f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    assert "resumed after epoch" in out.stderr
    assert len(records(results)) == 1 and not list(results.rglob("resume.safetensors"))


@pytest.mark.slow
def test_two_processes_share_one_results_folder(results):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "bench", "run", *FAST, "strategy=separate,fuse_then_joint", f"results_dir={results}"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for _ in range(2)]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    recs = records(results)
    assert sorted(r["strategy"] for r in recs) == ["fuse_then_joint", "separate"]
    # every fine-tune was trained once: one folder per task, each complete
    tunes = list((results / "synthetic/stages/finetune").iterdir())
    assert len(tunes) == 5 and all((t / "stage.json").exists() for t in tunes)


@pytest.mark.integration
def test_nan_loss_fails_only_its_cell(results):
    code, out = _run(results, "strategy=naive_mtl", "train.lr=1e30,1e-3")
    assert code == 1
    assert "FAILED: loss of task" in out and "at step" in out
    recs = records(results)
    assert len(recs) == 1 and recs[0]["train"]["lr"] == 1e-3
    assert list(results.rglob("failed.json"))


@pytest.mark.integration
def test_bench_run_with_one_seed_prints_no_mark_and_says_how_many_seeds_marks_need(results):
    """One seed: the printed leaderboard has intervals (test set only) but no *, bold or ≈, and its caption names
    the seeds a mark needs."""
    code, out = _run(results, "strategy=separate,naive_mtl", "report=true")
    assert code == 0, out
    flat = " ".join(out.split())
    assert "No *, bold or ≈: rows have 1 seed" in flat and "`seeds=3`" in flat
    assert "seed variance is unknown" in flat
    table = [line for line in out.splitlines() if re.match(r"\s*(separate|naive_mtl)\s+1\s", line)]  # row, n=1
    assert table and not any("*" in line or "≈" in line for line in table)
