"""``launcher=slurm`` and ``launcher=submitit_local``, through submitit.

``slurm`` submits the jobs as one SLURM job array (``sbatch``; ``launcher.max_parallel`` caps how many run at once)
and follows them; ``submitit_local`` runs the same submission on this machine, a process per job, at most
``workers`` at a time, which is how the tests and a single workstation exercise the code path. Each job's pickled
call, stdout and stderr sit in ``results/<suite>/launcher/<job id>/``.

Preemption and time limits: every job is a ``submitit.helpers.Checkpointable``, so when SLURM signals it (USR2
before a time limit or a preemption) submitit requeues it with the same arguments; a cell that restarts finds its
finished stages in the store and resumes its running stage from the last checkpoint the training loop saved.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from submitit.helpers import Checkpointable, DelayedSubmission

from bench.config import Frozen
from bench.errors import BenchError
from bench.launch.base import Done, Job, Launcher, register_launcher
from bench.launch.local import pin

POLL_S = 1.0
LOG_LINES = 8


class Task(Checkpointable):
    """A job as submitit runs it: in the folder the command ran in, with the torch threads its allocation gives.

    Signals in the job's process are submitit's: SIGUSR2 checkpoints and requeues (:meth:`checkpoint`), SIGTERM is
    bypassed (SLURM sends it before a preemption). Nothing here installs bench's own handlers, which belong to the
    following command's process only (bench.cli.StopSignals)."""

    def __init__(self, fn: Callable[..., Any], args: tuple, cwd: str, threads: int, procs: int = 1):
        self.fn, self.args, self.cwd, self.threads, self.procs = fn, args, cwd, threads, procs

    def __call__(self) -> Any:
        os.chdir(self.cwd)
        # on SLURM the allocation decides: its cores (cpus_per_task, else the partition's default), and the GPUs
        # SLURM put in CUDA_VISIBLE_DEVICES
        cores = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or self.threads
        pin(int(cores), None)
        if self.procs > 1:  # one of the cell's procs tasks: join the others (task 0 writes the store)
            from bench import distributed  # here: it imports torch, which the CLI's first checks do without

            return distributed.join_from_submitit(None, self.fn, self.args)
        return self.fn(*self.args)

    def checkpoint(self) -> DelayedSubmission:
        """Preempted or out of time: submit the same call again (the store makes it resume, not restart)."""
        return DelayedSubmission(self)


def _last_lines(job: Any) -> str:
    text = "\n".join(s for s in ((job.stderr() or ""), (job.stdout() or "")) if s)
    lines = [ln for ln in text.rstrip().splitlines() if ln.strip() and "submitit" not in ln]
    return "\n".join(lines[-LOG_LINES:])


def _value(job: Any) -> Any:
    """The job's return value (task 0's when the job ran a cell on several tasks)."""
    return job.results()[0]


def _error(job: Any) -> str:
    try:
        _value(job)
        return ""
    except Exception as e:  # submitit's FailedJobError carries the remote traceback; keep its last line
        state = getattr(job, "state", "UNKNOWN")
        text = str(e).strip().splitlines()
        last = next((ln.strip() for ln in reversed(text) if ln.strip() and not ln.startswith(" ")), type(e).__name__)
        if "has not produced any output" in str(e):
            return f"job {job.job_id} ended without a result (state {state}; killed, out of memory or out of time?)"
        return last


class _Submitit(Launcher):
    cluster = "local"
    starts_ranks = True  # procs=N: N tasks per job (tasks_per_node), which join one process group

    def _executor(self, folder: Path) -> Any:
        import submitit

        folder.mkdir(parents=True, exist_ok=True)
        ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=self.cluster)
        ex.update_parameters(**self._parameters())
        if self.common.procs > 1:
            ex.update_parameters(tasks_per_node=self.common.procs)
        return ex

    def _parameters(self) -> dict[str, Any]:
        raise NotImplementedError

    def _submit_limit(self, n: int) -> int:
        """Jobs submitted at once: a local executor starts all it is given, so this command throttles it."""
        return self.parallel

    def _vanished(self, subs: list[Any]) -> set[str]:
        """Ids of jobs that ended without the executor noticing (see :meth:`Slurm._vanished`)."""
        return set()

    def _is_done(self, sub: Any) -> bool:
        return sub.done()

    def _jobs(self, jobs: Sequence[Job]) -> list[Task]:
        cwd = os.getcwd()
        return [Task(j.fn, j.args, cwd, self.threads(), self.common.procs) for j in jobs]

    def run(self, jobs: Sequence[Job], tick: Callable[[], None] | None = None) -> Iterator[Done]:
        tasks = self._jobs(jobs)
        queue = list(range(len(jobs)))
        live: dict[int, tuple[Any, float]] = {}
        executors: dict[Path, Any] = {}
        limit = self._submit_limit(len(jobs))
        try:
            while queue or live:
                batch = []
                while queue and len(live) + len(batch) < limit:
                    batch.append(queue.pop(0))
                if batch:
                    for i, sub in zip(batch, self._submit(jobs, tasks, batch, executors)):
                        live[i] = (sub, time.perf_counter())
                gone = self._vanished([sub for sub, _ in live.values()])
                for i, (sub, t0) in list(live.items()):
                    vanished = str(sub.job_id) in gone
                    if not vanished and not self._is_done(sub):
                        continue
                    del live[i]
                    err = f"job {sub.job_id} left the queue without a result (cancelled, out of time or memory?)" \
                        if vanished and not sub.paths.result_pickle.exists() else _error(sub)
                    value = None if err else _value(sub)
                    yield Done(jobs[i], not err, value, err, _last_lines(sub) if err else "", time.perf_counter() - t0,
                               len(live), job_id=str(sub.job_id), extra={"log": str(sub.paths.stderr)})
                if tick is not None:
                    tick()
                if live:
                    time.sleep(POLL_S)
        except BaseException:
            for sub, _ in live.values():  # Ctrl-C: stop what this command started (finished stages are kept)
                try:
                    sub.cancel(check=False)
                except Exception:
                    pass
            raise

    def _submit(self, jobs: Sequence[Job], tasks: list[Task], idx: list[int], executors: dict) -> list[Any]:
        """Submit ``idx`` (grouped by log folder; one SLURM job array per group)."""
        out: dict[int, Any] = {}
        groups: dict[Path, list[int]] = {}
        for i in idx:
            groups.setdefault(Path(jobs[i].folder or "results") / "launcher", []).append(i)
        for folder, members in groups.items():
            if folder not in executors:
                executors[folder] = self._executor(folder)
            ex = executors[folder]
            ex.update_parameters(name=f"bench:{jobs[members[0]].name.split()[0]}")
            try:
                with ex.batch():
                    subs = [ex.submit(tasks[i]) for i in members]
            except Exception as e:
                msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                raise BenchError(f"launcher={self.name}: submitting {len(members)} job(s) failed: {msg}") from None
            out.update(zip(members, subs))
            try:  # submitit also makes the template folder itself; the real ones are named by job id
                (folder / "%j").rmdir()
            except OSError:
                pass
        return [out[i] for i in idx]

    def submit(self, jobs: Sequence[Job]) -> list[str]:
        subs = self._submit(jobs, self._jobs(jobs), list(range(len(jobs))), {})
        return [str(s.job_id) for s in subs]


class LocalOptions(Frozen):
    """``launcher.*`` keys of ``submitit_local``."""

    timeout_min: int = Field(24 * 60, ge=1)  # submitit kills a local job after this long (its default is 2 min)
    setup: list[str] = Field(default_factory=list)  # shell lines run before each job


@register_launcher("submitit_local")
class SubmititLocal(_Submitit):
    """submitit's local executor: the SLURM code path on this machine, a process per job, `workers` at a time."""

    Options = LocalOptions
    cluster = "local"

    def check(self) -> None:
        if not self.common.wait:
            Launcher.submit(self, [])  # raises: local jobs are children of this command
        if self.common.devices:
            raise BenchError("devices= is for launcher=local; submitit_local gives each job the GPUs of "
                             "launcher.gpus_per_node (not supported here); drop devices=")

    def _parameters(self) -> dict[str, Any]:
        o = self.options
        return {"timeout_min": o.timeout_min, "local_setup": list(o.setup), "gpus_per_node": 0}


class SlurmOptions(Frozen):
    """``launcher.*`` keys of ``slurm`` (each maps onto submitit's SLURM parameter of the same meaning)."""

    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int | None = Field(None, ge=1)  # None: the partition's default (the job's torch threads)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int = Field(4 * 60, ge=1)
    setup: list[str] = Field(default_factory=list)  # shell lines before each job (module load ..., source venv)
    max_parallel: int | None = Field(None, ge=1)  # jobs of the array running at once (SLURM's %N)
    additional: dict[str, Any] = Field(default_factory=dict)  # any other sbatch option, e.g. {account: lab}


@register_launcher("slurm")
class Slurm(_Submitit):
    """A SLURM cluster through submitit: one job array per command, followed until it ends (or wait=false)."""

    Options = SlurmOptions
    cluster = "slurm"
    runs_here = False
    _absent: set[str] = set()

    def check(self) -> None:
        if shutil.which("sbatch") is None:
            raise BenchError("launcher=slurm needs SLURM's sbatch, which is not on PATH here; run from a cluster's "
                             "login node, or use launcher=submitit_local to run the same jobs on this machine")
        if self.common.devices:
            raise BenchError("devices= is for launcher=local; on SLURM ask for launcher.gpus_per_node=N instead")

    @property
    def parallel(self) -> int:
        # the scheduler queues the array; this only caps what is submitted when max_parallel is given
        return self.options.max_parallel or 10**6

    def threads(self) -> int:
        return self.options.cpus_per_task or 1

    def _submit_limit(self, n: int) -> int:
        return n  # one array; SLURM runs at most max_parallel of it at once (slurm_array_parallelism)

    def _is_done(self, sub: Any) -> bool:
        # the result file alone (submitit writes one for a return and for an exception); submitit's own done()
        # also polls sacct, which fails loudly on clusters without accounting: squeue covers the rest
        return sub.paths.result_pickle.exists()

    def describe(self) -> str:
        cap = self.options.max_parallel
        return "one job array" + (f", at most {cap} running" if cap else "")

    def _vanished(self, subs: list[Any]) -> set[str]:
        """submitit learns that a job ended from its result file or from ``sacct``; on a cluster without
        accounting, a job cancelled or killed before writing its result would be waited for forever. A job that
        squeue no longer lists twice in a row (a few seconds apart) has ended."""
        import subprocess

        if not subs:
            return set()
        try:
            listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return set()
        if listed.returncode != 0:
            return set()
        queued = set(listed.stdout.split())
        absent = {str(s.job_id) for s in subs if str(s.job_id) not in queued}
        gone = absent & self._absent  # absent at two polls: not a job between submission and listing
        self._absent = absent
        return gone

    def _parameters(self) -> dict[str, Any]:
        o = self.options
        p: dict[str, Any] = {"timeout_min": o.timeout_min, "gpus_per_node": o.gpus_per_node,
                             "slurm_setup": list(o.setup)}
        if o.cpus_per_task is not None:
            p["cpus_per_task"] = o.cpus_per_task
        if o.partition:
            p["slurm_partition"] = o.partition
        if o.mem_gb is not None:
            p["mem_gb"] = o.mem_gb
        if o.max_parallel is not None:
            p["slurm_array_parallelism"] = o.max_parallel
        if o.additional:
            p["slurm_additional_parameters"] = dict(o.additional)
        return p
