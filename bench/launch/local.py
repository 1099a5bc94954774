"""``launcher=local`` (the default): jobs on this machine. ``workers=1`` runs them in this process, one after the
other; ``workers=N`` starts N worker processes that take jobs from one queue, each with its share of the cores
(``torch.set_num_threads(cores // N)``) and, with ``devices=[0,1]``, one GPU each.

Worker processes are forked when that is safe (Linux, no CUDA initialised, one torch thread per worker), so they
inherit the imported libraries, the plan and the loaded data and start in milliseconds; otherwise they are spawned
(a forked child that runs a multi-threaded OpenMP region its parent had started can hang, and CUDA cannot be
forked). They ignore Ctrl-C: the command stops them itself, so one message is printed, not one traceback per
worker; SIGTERM or SIGUSR2 stops a worker the same way. A worker that dies (killed, out
of memory) fails only the job it was running; a fresh worker takes its place for the rest.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.launch.base import Done, Job, Launcher, register_launcher, tail

POLL_S = 0.5


def pin(threads: int | None, device: int | None) -> None:
    """Give this process its share of the machine: torch threads, and one GPU (as ``cuda:0``)."""
    if device is not None:  # before torch initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def run_logged(fn: Callable[..., Any], args: tuple, log: Path) -> Any:
    """``fn(*args)`` with this process's stdout and stderr (file descriptors too: C code, progress bars) in ``log``.
    An exception is written there with its traceback and re-raised as one line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            return fn(*args)
        except (SystemExit, KeyboardInterrupt):
            raise  # the worker is being stopped: unwind (locks released, exit handlers run), do not report
        except BaseException as e:
            traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0]
            raise RuntimeError(f"{type(e).__name__}: {first}" if first else type(e).__name__) from None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def start_method(threads: int, devices: list[int] | None) -> str:
    """``fork`` where it is safe and saves each worker the seconds of importing torch and loading the suite."""
    import torch

    if sys.platform == "linux" and threads == 1 and not devices and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def _worker(jobs: list[Job], tasks, results, threads: int, devices: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command handles Ctrl-C and stops its workers
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # a fork after the parent tokenised: no warning
    # ... with SIGTERM, which unwinds the running cell (its stage lock is released, its last epoch checkpoint kept)
    # and lets the process's exit handlers run; SIGUSR2 (a cluster's warning before a time limit) does the same. A
    # forked worker must not keep the command's own handlers (bench.cli.StopSignals)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGUSR2, _stop)
    device = None
    if devices is not None:
        device = devices.get()
    pin(threads, device)
    while True:
        item = tasks.get()
        if item is None:
            return
        i, log = item
        job = jobs[i]
        results.put(("start", i, os.getpid()))
        t0 = time.perf_counter()
        try:
            value = run_logged(job.fn, job.args, log)
            results.put(("end", i, True, value, "", time.perf_counter() - t0))
        except Exception as e:
            results.put(("end", i, False, None, str(e), time.perf_counter() - t0))


@register_launcher("local")
class Local(Launcher):
    """This machine: in this process (workers=1), or N worker processes sharing the jobs (workers=N, devices=[...])."""

    def check(self) -> None:
        devices = self.common.devices
        if devices is not None:
            import torch

            n = torch.cuda.device_count()
            if not devices:
                raise BenchError("devices=[] names no GPU; give GPU ids (devices=[0,1]) or leave devices out")
            bad = [d for d in devices if not 0 <= d < n]
            if bad:
                seen = f"GPUs 0..{n - 1}" if n else "no CUDA GPU"
                raise BenchError(f"devices={devices}: this machine has {seen}; leave devices out to run on the CPU")
        if not self.common.wait:
            super().submit([])  # raises: nothing here outlives the command
        if self.common.procs > 1 and self.parallel > 1:
            raise BenchError(f"procs={self.common.procs} with workers={self.common.workers}: a cell's processes are "
                             "started by the command itself, one cell at a time; drop workers= (or use "
                             "launcher=submitit_local)")

    @property
    def parallel(self) -> int:
        if self.common.devices and self.common.workers == 1:
            return len(self.common.devices)  # devices=[0,1] alone means one worker per GPU
        return self.common.workers

    def run(self, jobs: Sequence[Job], tick: Callable[[], None] | None = None) -> Iterator[Done]:
        if self.parallel == 1 and not self.common.devices:
            for job in jobs:  # today's behaviour: in this process; a bug keeps its traceback
                t0 = time.perf_counter()
                value = job.fn(*job.args)
                yield Done(job, True, value, "", "", time.perf_counter() - t0)
            return
        yield from self._pool(list(jobs), tick)

    def _pool(self, jobs: list[Job], tick: Callable[[], None] | None) -> Iterator[Done]:
        threads = self.threads()
        ctx = mp.get_context(start_method(threads, self.common.devices))
        sys.stdout.flush()  # a forked child must not print what the parent had buffered
        sys.stderr.flush()
        tasks, results = ctx.Queue(), ctx.Queue()
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        logs = [(job.folder or Path("results")) / "launcher" / f"local-{stamp}" / f"{i:03d}.log"
                for i, job in enumerate(jobs)]
        for i in range(len(jobs)):
            tasks.put((i, logs[i]))
        n = min(self.parallel, len(jobs))
        devices = None
        if self.common.devices:
            devices = ctx.Queue()
            for k in range(n + len(jobs)):  # enough for replacements of dead workers
                devices.put(self.common.devices[k % len(self.common.devices)])
        # the jobs travel with the worker, not one by one through the queue: a forked worker shares what they hold
        # (a run's loaded plan and data), a spawned one unpickles it once, not once per job
        start = lambda: ctx.Process(target=_worker, args=(jobs, tasks, results, threads, devices), daemon=True)
        procs = [start() for _ in range(n)]
        for p in procs:
            p.start()
        running: dict[int, tuple[int, float]] = {}  # job -> (pid, start time)
        left = set(range(len(jobs)))
        try:
            while left:
                try:
                    msg = results.get(timeout=POLL_S)
                except queue.Empty:
                    msg = None
                if msg is not None and msg[0] == "start":
                    running[msg[1]] = (msg[2], time.perf_counter())
                elif msg is not None:
                    _, i, ok, value, error, seconds = msg
                    running.pop(i, None)
                    left.discard(i)
                    yield Done(jobs[i], ok, value, error, "" if ok else tail(logs[i]), seconds, len(running),
                               extra={"log": str(logs[i])})
                for k, p in enumerate(procs):  # a dead worker fails its job; a fresh one takes its place
                    if p.is_alive() or p.exitcode == 0:
                        continue
                    for i, (pid, t0) in list(running.items()):
                        if pid == p.pid:
                            running.pop(i)
                            left.discard(i)
                            how = f"killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exit {p.exitcode}"
                            yield Done(jobs[i], False, None, f"its worker process (pid {pid}) died ({how})",
                                       tail(logs[i]), time.perf_counter() - t0, len(running),
                                       extra={"log": str(logs[i])})
                    procs[k] = start()
                    procs[k].start()
                if tick is not None:
                    tick()
        finally:
            for _ in procs:
                tasks.put(None)
            for p in procs:
                if p.is_alive() and left:  # interrupted: stop what still runs (finished stages are kept)
                    p.terminate()
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
            for q in (tasks, results, devices):
                if q is not None:
                    q.cancel_join_thread()  # what stopped workers left unread must not block this exit
                    q.close()
