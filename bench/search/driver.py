"""Running a study: open or resume it, run trials until ``trials`` of them finished, in one or K processes.

Counting. ``trials=N`` is the number of *finished* trials the study should hold (COMPLETE + PRUNED), not "N more":
rerunning the same command after Ctrl-C or a crash runs only the missing ones, and raising N extends a study.
FAIL trials (interrupted, killed, surplus) do not count.

Exactly N, with many workers. Before a worker starts a trial it counts finished + running trials; when they
already reach N it waits (the running ones may still fail and need a stand-in) instead of starting a surplus trial.
Two workers that look at the same moment can both start one; the later-numbered of them sees, inside its
objective, N earlier live trials and stops at once (state FAIL, user attribute ``surplus``).

Killed workers. Each running trial sends a heartbeat (see :mod:`bench.search.storage`). A waiting worker fails the
trials whose heartbeat stopped; the storage's retry callback enqueues a copy with the same parameters, and the next
``ask`` of any worker runs it. So a study finishes with N trials as long as one worker is alive (or is restarted).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from typing import Any

from bench.errors import BenchError
from bench.launch.base import fmt_duration
from bench.search.config import SearchConfig

CONFIG_ATTR = "bench_search"
POLL_S = 0.5


class Surplus(Exception):
    """This trial was started after N others were already live (a race between workers): it does nothing."""


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own progress lines replace Optuna's per-trial log
    # a Ctrl-C that lands inside a storage query makes SQLAlchemy's pool log a traceback while it closes the cursor;
    # the interrupt itself is handled (the trial is marked failed, the command says how to resume), so that log is
    # noise on the one-line contract. Real storage errors still raise.
    import logging

    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _sampler(cfg: SearchConfig, n_existing: int):
    import optuna

    # the seed moves with the worker index (workers must not propose the same points) and with the trials already
    # in the study (a resumed run must not replay the random start-up points of the first run)
    seed = cfg.sampler_seed + 1009 * (cfg.worker or 0) + n_existing
    # constant_liar: running trials of other workers count as bad, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup, multivariate=True,
                                      constant_liar=True)


def _pruner(cfg: SearchConfig):
    import optuna

    if cfg.pruner == "none" or len(cfg.objectives) > 1:  # Optuna prunes single-objective studies only
        return optuna.pruners.NopPruner()
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, cfg.trials // 4)), n_warmup_steps=0)


def open_study(cfg: SearchConfig, storage: Any):
    """Load the study, or create it (with the baseline point enqueued). A study created by a different search
    (another space, objective, suite configuration, ...) is refused untouched: resuming it would mix trials."""
    import optuna

    mine = cfg.fingerprint()
    try:
        study = optuna.load_study(study_name=cfg.study, storage=storage, pruner=_pruner(cfg))
    except KeyError:
        study = None
    if study is not None:
        theirs = study.user_attrs.get(CONFIG_ATTR)
        if theirs is not None and theirs != mine:
            diff = sorted(k for k in mine if mine.get(k) != theirs.get(k))
            raise BenchError(f"study {cfg.study!r} in {cfg.storage} was created by a different search (differs "
                             f"in: {', '.join(diff)}); rerun with its settings or choose another study=NAME")
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in cfg.directions]:
            raise BenchError(f"study {cfg.study!r} optimises {[d.name.lower() for d in study.directions]}, not "
                             f"{cfg.directions}; choose another study=NAME")
    else:
        study = optuna.create_study(study_name=cfg.study, storage=storage, directions=cfg.directions,
                                    pruner=_pruner(cfg), load_if_exists=True)
        if CONFIG_ATTR not in study.user_attrs:
            study.set_user_attr(CONFIG_ATTR, mine)
            baseline = cfg.space.default_trial(cfg.tasks)
            if baseline is not None:  # the un-tuned point (equal λ, mean fusion, ...) is always in the study
                study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)
    study.sampler = _sampler(cfg, len(study.get_trials(deepcopy=False)))
    return study


def counts(study) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def finished(c: Counter) -> int:
    return c["COMPLETE"] + c["PRUNED"]


class Progress:
    """One line per finished trial, with the best so far and an ETA from this session's trial durations."""

    def __init__(self, cfg: SearchConfig, study, out):
        self.cfg, self.study, self.out = cfg, study, out
        self.seen: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.durations: list[float] = []

    def poll(self) -> None:
        """Print every trial that finished since the last call (any worker's)."""
        new = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in self.seen]
        for t in sorted(new, key=lambda t: t.number):
            self.seen.add(t.number)
            self.line(t)

    def line(self, t) -> None:
        cfg = self.cfg
        dur = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_start and t.datetime_complete \
            else 0.0
        if t.state.name in ("COMPLETE", "PRUNED"):
            self.durations.append(dur)
        c = counts(self.study)
        done = finished(c)
        if t.state.name == "COMPLETE":
            vals = ", ".join(f"{o.spec}={v:.4f}" for o, v in zip(cfg.objectives, t.values))
            what = f"{vals}"
        elif t.state.name == "PRUNED":
            what = "pruned" + (f" ({t.user_attrs['failed']})" if "failed" in t.user_attrs else
                               f" after {len(t.intermediate_values)} epoch(s)")
        else:
            # the retry copy (RetryFailedTrialCallback) names the trial it retries
            retried = any(u.system_attrs.get("failed_trial") == t.number for u in self.study.get_trials(deepcopy=False))
            what = "surplus (another worker took the last slot)" if t.user_attrs.get("surplus") else \
                "failed" + (" (retried)" if retried else "")
        best = ""
        if len(cfg.objectives) == 1 and c["COMPLETE"]:
            b = self.study.best_trial
            best = f"; best {b.value:.4f} (#{b.number})"
        elif c["COMPLETE"]:
            best = f"; Pareto set {len(self.study.best_trials)}"
        remaining = max(0, cfg.trials - done)
        eta = ""
        if remaining and self.durations:
            eta = f"; ETA {fmt_duration(remaining * sum(self.durations) / len(self.durations) / cfg.workers)}"
        trainings = t.user_attrs.get("cost", {}).get("new_trainings")
        tr = f", {trainings} new training(s)" if trainings else ""
        print(f"[{min(done, cfg.trials)}/{cfg.trials}] trial #{t.number} {what} in {dur:.1f}s{tr}{best}{eta}",
              file=self.out, flush=True)


def run_loop(cfg: SearchConfig, study, objective, progress: Progress | None = None) -> None:
    """Run trials in this process until the study holds ``cfg.trials`` finished ones (see the module docstring)."""
    import optuna
    from filelock import FileLock

    waiting_noted = False
    # Workers on one machine take a slot under a file lock held from the count until their trial is RUNNING, so
    # they never start surplus trials; workers on other machines (a shared RDB) fall back on the check in guarded.
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    slot = FileLock(str(cfg.out_dir / ".slot.lock"))

    def guarded(trial):
        live = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED,
                                                        optuna.trial.TrialState.RUNNING))
        if slot.is_locked:
            slot.release()
        if sum(1 for t in live if t.number < trial.number) >= cfg.trials:
            trial.set_user_attr("surplus", True)
            raise Surplus()
        return objective(trial)

    while True:
        slot.acquire()
        try:
            optuna.storages.fail_stale_trials(study)  # a killed worker's trial -> FAIL + a retry copy (WAITING)
            c = counts(study)
            if finished(c) >= cfg.trials:
                return
            if finished(c) + c["RUNNING"] >= cfg.trials:
                slot.release()
                if progress is not None and not waiting_noted:
                    print(f"waiting for {c['RUNNING']} running trial(s) (other workers, or a dead one whose "
                          f"heartbeat expires after {3 * cfg.heartbeat}s)", file=progress.out, flush=True)
                    waiting_noted = True
                time.sleep(POLL_S)
                continue
            waiting_noted = False
            try:
                study.optimize(guarded, n_trials=1, catch=(Surplus,), gc_after_trial=False)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as e:
                # this worker was paused past its grace period (suspended, a network stall): its trial was failed
                # and retried by another worker meanwhile, so the late result is dropped, and the worker goes on
                if "FAIL" not in str(e) and not isinstance(e, optuna.exceptions.UpdateFinishedTrialError):
                    raise
                if progress is not None:
                    print(f"a trial of this worker was failed after {3 * cfg.heartbeat}s without heartbeat and "
                          "retried elsewhere; its late result is dropped", file=progress.out, flush=True)
        finally:
            if slot.is_locked:  # released by guarded unless the trial never started
                slot.release()
        if progress is not None:
            progress.poll()


def worker_job(args: list[str]) -> int:
    """One search worker as a launcher's job runs it (a SLURM job, a submitit process): trials until the study is
    done, reporting through the storage."""
    from bench.search import search_command

    return search_command(args)


def launch_workers(cfg: SearchConfig, progress: Progress, out) -> int:
    """Start ``cfg.workers`` workers through the command's launcher (``launcher=slurm|submitit_local``) and follow
    the study through the storage until every worker has ended."""
    from bench.launch import Job, is_launch_key

    args = [a for a in cfg.args if not is_launch_key(a.split("=", 1)[0]) and not a.startswith("_worker=")]
    folder = cfg.results_dir / cfg.suite.name
    jobs = [Job(f"search worker {i}", worker_job, (args + [f"_worker={i}"],), folder) for i in range(cfg.workers)]
    launcher = cfg.launcher
    if not launcher.common.wait:
        ids = launcher.submit(jobs)
        print(f"submitted {len(ids)} search worker(s) to {launcher.name} ({', '.join(ids)}); logs in "
              f"{folder / 'launcher'}; rerun this command (without wait=false) to follow the study and write "
              "its outputs", file=out, flush=True)
        return 0
    print(f"starting {cfg.workers} search worker(s) with launcher={launcher.name}; logs in {folder / 'launcher'}",
          file=out, flush=True)
    rc = 0
    for done in launcher.run(jobs, tick=progress.poll):
        if not done.ok or done.value not in (0, None):
            rc = 1
            why = done.error or f"exited with {done.value}"
            print(f"{done.job.name} (job {done.job_id}) failed: {why}; a trial it left running is failed after "
                  f"{3 * cfg.heartbeat}s without heartbeat and retried by the others", file=out, flush=True)
            for line in done.log.splitlines():
                print(f"    | {line}", file=out)
    progress.poll()
    return rc


def run_workers(cfg: SearchConfig, study, progress: Progress, out) -> int:
    """Start ``cfg.workers`` processes on the study and follow their progress through the storage."""
    env = dict(os.environ)
    if cfg.threads is not None:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    from bench.launch import is_launch_key

    args = [a for a in cfg.args if not is_launch_key(a.split("=", 1)[0]) and not a.startswith("_worker=")]
    devices = cfg.launcher.common.devices if cfg.launcher is not None else None
    procs = []
    for i in range(cfg.workers):
        if devices:  # devices=[0,1]: worker i sees one GPU, as cuda:0
            env["CUDA_VISIBLE_DEVICES"] = str(devices[i % len(devices)])
        procs.append(subprocess.Popen([sys.executable, "-m", "bench", "search", *args, f"_worker={i}"], env=env))
    print(f"started {cfg.workers} worker processes: pids {', '.join(str(p.pid) for p in procs)}", file=out,
          flush=True)
    reported: set[int] = set()
    try:
        while [p.poll() for p in procs].count(None):  # poll every process (any() would stop at the first)
            progress.poll()
            for i, p in enumerate(procs):
                if p.returncode not in (None, 0) and i not in reported:
                    reported.add(i)
                    how = f"was killed by signal {-p.returncode}" if p.returncode < 0 else f"exited with {p.returncode}"
                    alive = sum(q.poll() is None for q in procs)
                    print(f"worker {i} (pid {p.pid}) {how}; {alive} worker(s) continue (a trial it left running is "
                          f"failed after {3 * cfg.heartbeat}s without heartbeat and retried)", file=out, flush=True)
            time.sleep(POLL_S)
        progress.poll()
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # each worker marks its running trial failed and exits
        deadline = time.time() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    return 0 if all(p.returncode == 0 for p in procs) else 1
