"""``bench search`` on a real PostgreSQL server (tests/postgres.py starts a throwaway one): K worker processes share
a study through ``postgresql+psycopg://``, one of them is SIGKILLed mid-training, and the study still ends with
exactly N finished trials, the killed one failed and retried, nothing lost and nothing run twice.

Without the server binaries the tests skip with the reason (``-ra`` shows it), except under ``CI=true``, where they
fail: .ci/run installs Debian's ``postgresql`` package so that they run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter

import pytest

from tests.conftest import REPO
from tests.postgres import missing, postgres_server

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "BENCH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
TRIALS, EPOCHS, WORKERS = 8, 6, 4


@pytest.fixture(scope="session")
def pg():
    """A throwaway PostgreSQL server for the session (skip, or fail under CI=true, without the binaries)."""
    reason = missing()
    if reason is not None and os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run; .ci/run installs the postgresql package)", pytrace=False)
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server


def spawn(*args: str, stderr: int = subprocess.STDOUT) -> subprocess.Popen:
    # SIGINT back to its default in the child (see tests/test_search.py). One pipe by default: the test reads the
    # first lines itself, and communicate() then continues from the same buffered reader (with two pipes it would not)
    return subprocess.Popen([sys.executable, "-m", "bench", "search", "suite=synthetic", "threads=1", *args],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def storage(url: str):
    import optuna

    from bench.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_storage(url, heartbeat=1)


def retry_of(trials) -> dict[int, object]:
    """failed trial number -> the trial that retried it (the last entry of its ``retry_history``)."""
    return {t.system_attrs["retry_history"][-1]: t for t in trials if t.system_attrs.get("retry_history")}


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_workers_on_postgres_survive_a_killed_worker(pg, tmp_path):
    import optuna

    t0 = time.perf_counter()
    url = pg.create_database("search_kill")
    p = spawn("strategy=naive_mtl", "space=lambda", f"trials={TRIALS}", f"workers={WORKERS}", f"storage={url}",
              "study=pg", f"results_dir={tmp_path / 'results'}", f"train.epochs={EPOCHS}", "pruner=median",
              "heartbeat=1", "plots=false")
    try:
        # the launcher creates the schema and the study before it starts the workers: only then open the storage
        # here (two processes creating Optuna's tables at the same moment can collide on PostgreSQL)
        head = []
        for line in p.stdout:
            head.append(line)
            if line.startswith("started "):
                break
        assert head and head[-1].startswith(f"started {WORKERS} worker processes"), "".join(head) + p.stdout.read()
        store = storage(url)
        victim, deadline = None, time.time() + 150
        while victim is None and time.time() < deadline:  # a trial that has trained >= 1 epoch and has more to go
            study = optuna.load_study(study_name="pg", storage=store)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if ("worker" in t.user_attrs and "failed_trial" not in t.system_attrs
                        and 1 <= len(t.intermediate_values) <= EPOCHS - 3):
                    victim = t
                    break
            time.sleep(0.05)
        assert victim is not None, "no trial reached its first epoch in 150 s"
        pid = victim.user_attrs["worker"]["pid"]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.perf_counter() - t0
        rest, _ = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    out = "".join(head) + rest  # stdout and stderr, the workers' included

    study = optuna.load_study(study_name="pg", storage=store)
    trials = study.get_trials(deepcopy=False)
    c = Counter(t.state.name for t in trials)
    by_number = {t.number: t for t in trials}
    retries = retry_of(trials)
    done = [t for t in trials if t.state.is_finished() and t.state.name != "FAIL"]
    surplus = [t for t in trials if t.user_attrs.get("surplus")]

    def settled(n: int) -> bool:  # a failed trial is settled when its chain of retries ends finished
        while by_number[n].state.name == "FAIL":
            if n not in retries:
                return False
            n = retries[n].number
        return by_number[n].state.name in ("COMPLETE", "PRUNED")

    # duplicates: a trial number twice, or two finished trials of one parameter point (a retry copies its failed
    # original's parameters; the original is FAIL, so the pair is not both finished)
    points = Counter(tuple(sorted(t.params.items())) for t in done)
    duplicates = (len(trials) - len({t.number for t in trials})) + sum(n - 1 for n in points.values())
    # lost: a trial that started and neither finished nor was retried to a finish (WAITING/RUNNING left over, a FAIL
    # whose retry chain never finished); a surplus trial is FAIL by design and has no retry
    lost = sum(1 for t in trials if t.state.name in ("RUNNING", "WAITING")) + \
        sum(1 for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("surplus") and not settled(t.number))
    retry = retries.get(victim.number)
    summary = (f"complete={c['COMPLETE']} pruned={c['PRUNED']} failed={c['FAIL']} running={c['RUNNING']} "
               f"waiting={c['WAITING']} surplus={len(surplus)} duplicates={duplicates} lost={lost} "
               f"retried=#{victim.number}->#{retry.number if retry else None} "
               f"rc={p.returncode} killed_at={killed_at:.1f}s total={time.perf_counter() - t0:.1f}s")
    print(f"\npostgres search: {summary}")

    assert "Traceback" not in out, out
    # the study is complete, but a worker did not exit cleanly: run_workers returns 1 and says which one died
    assert p.returncode == 1, summary + "\n" + out
    assert f"(pid {pid}) was killed by signal 9" in out, out
    assert c["RUNNING"] == 0 and c["WAITING"] == 0, summary
    assert c["COMPLETE"] + c["PRUNED"] == TRIALS, summary
    assert duplicates == 0 and lost == 0 and not surplus, summary
    killed = by_number[victim.number]
    assert killed.state.name == "FAIL", summary
    assert retry is not None and retry.system_attrs["failed_trial"] == victim.number, summary
    assert retry.state.name in ("COMPLETE", "PRUNED") and retry.params == killed.params, summary
    assert retry.user_attrs["worker"]["pid"] != pid  # run again by a surviving worker
    assert f"study 'pg': {c['COMPLETE']} complete" in out, out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_wrong_password_is_one_redacted_line(pg, tmp_path):
    t0 = time.perf_counter()
    pg.create_database("search_auth")
    bad = pg.url("search_auth", password="wrong-secret")
    p = spawn("strategy=naive_mtl", "space=lambda", "trials=2", f"storage={bad}", "study=auth",
              f"results_dir={tmp_path / 'results'}", "train.epochs=1", "plots=false", stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=100)
    lines = [line for line in err.splitlines() if line.strip()]
    print(f"\npostgres wrong password: rc={p.returncode} stderr={lines!r} ({time.perf_counter() - t0:.1f}s)")
    assert p.returncode == 2, out + err
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    assert f"postgresql+psycopg://bench:***@127.0.0.1:{pg.port}/search_auth" in lines[0], lines[0]
    assert "wrong-secret" not in out + err and pg.password not in out + err
    assert "password authentication failed" in lines[0], lines[0]
    # nothing was created: the database (reachable with the right password) holds no table, so no study
    assert pg.tables("search_auth") == []
