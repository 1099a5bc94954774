"""The Launcher interface: where the jobs of a command (the cells of ``bench run``, the workers of ``bench search``)
run, and how the command follows them.

A job is a picklable module-level function and its arguments. It must be *idempotent*: the store makes it so for
cells (a finished cell or stage is read, not recomputed), which is what makes a requeued, retried or duplicated job
harmless. A launcher runs jobs and yields one :class:`Done` per job as it ends, in completion order; the command
prints progress and reports from those.

Example (a launcher that runs every job in this process, one after the other):

    >>> from bench.launch.base import Done, Job, Launcher
    >>> class Inline(Launcher):
    ...     '''Every job in this process.'''
    ...     def run(self, jobs, tick=None):
    ...         for job in jobs:
    ...             yield Done(job, True, job.fn(*job.args), "", "", 0.0)
    >>> [d.value for d in Inline(None).run([Job("a", abs, (-2,)), Job("b", abs, (3,))])]
    [2, 3]

Register one with ``@register_launcher("name")`` in a module that is imported (a strategy file works too); its
``Options`` model declares the ``launcher.*`` keys it takes.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from bench.config import Frozen, validated
from bench.errors import BenchError
from bench.plugins.registry import Registry


def register_launcher(name: str) -> Callable[[type[Launcher]], type[Launcher]]:
    """Class decorator: ``launcher=name`` builds this class (the registry sets ``cls.name``)."""
    return LAUNCHERS.register(name)


class NoOptions(Frozen):
    pass


class Common(Frozen):
    """The keys every launcher takes (top level on the command line: ``workers=2 devices=[0,1] wait=false``)."""

    workers: int = Field(1, ge=1)  # jobs at once
    devices: list[int] | None = None  # GPU ids; one job at a time per device
    wait: bool = True  # false: submit and return (a scheduler's launchers only)
    procs: int = Field(1, ge=1)  # processes per cell: its training steps split the batch (bench.distributed)


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args)`` in a process of the launcher's choosing. ``folder`` is where its log goes
    (``results/<suite>/launcher/``)."""

    name: str
    fn: Callable[..., Any]
    args: tuple = ()
    folder: Path | None = None


@dataclass
class Done:
    """A job that ended: ``ok`` with ``fn``'s return ``value``, or not, with a one-line ``error`` and the last lines
    of its ``log``."""

    job: Job
    ok: bool
    value: Any
    error: str
    log: str
    seconds: float
    running: int = 0  # jobs still running when this one ended
    job_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Launcher(ABC):
    """Runs jobs. ``check`` fails before anything is submitted; ``run`` yields as jobs end; ``submit`` hands jobs to
    a scheduler and returns their ids without waiting (``wait=false``)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[Frozen]] = NoOptions
    #: True when the launcher itself starts a cell's ``procs`` processes (a scheduler's tasks); otherwise the job
    #: starts them on its machine with torch's elastic launcher (bench.distributed.run_ranks)
    starts_ranks: ClassVar[bool] = False
    #: True when the jobs run on this machine (its cores bound ``procs x workers``); a cluster's allocation decides
    runs_here: ClassVar[bool] = True

    def __init__(self, options: Frozen | None, common: Common | None = None):
        self.options = options if options is not None else self.Options()
        self.common = common or Common()

    def check(self) -> None:  # noqa: B027 (an optional hook)
        """Fail with one line (``BenchError``) when this launcher cannot run here (no scheduler, no GPU, ...)."""

    @abstractmethod
    def run(self, jobs: Sequence[Job], tick: Callable[[], None] | None = None) -> Iterator[Done]:
        """Run ``jobs``; yield one :class:`Done` per job as it ends. ``tick`` is called about once a second while
        waiting (a search prints trials as they finish). Ctrl-C stops what runs and re-raises."""

    def submit(self, jobs: Sequence[Job]) -> list[str]:
        raise BenchError(f"wait=false needs a scheduler that keeps jobs running after this command exits; "
                         f"launcher={self.name} does not (use launcher=slurm)")

    @property
    def parallel(self) -> int:
        """How many jobs run at once (for the ETA)."""
        return self.common.workers

    def describe(self) -> str:
        """How the jobs run, for the command's first line."""
        return f"{self.parallel} at a time"

    def threads(self) -> int:
        """Torch threads per job: the cores of this machine split between the jobs that run at once."""
        return max(1, (os.cpu_count() or 1) // max(1, self.parallel))


#: every launcher: the built-in modules of :mod:`bench.launch` and the plug-ins register here
LAUNCHERS: Registry[type[Launcher]] = Registry("launcher", Launcher, builtins=("bench.launch",), plugins=True)


def build_launcher(name: str, options: dict[str, Any], common: dict[str, Any]) -> Launcher:
    """``launcher=name launcher.key=value ... workers=N devices=[...] wait=...`` -> a checked launcher."""
    cls = LAUNCHERS.get(name)
    for key in options:
        if key not in cls.Options.model_fields:
            owners = [n for n in LAUNCHERS.names() if key in LAUNCHERS.get(n).Options.model_fields]
            if owners or not cls.Options.model_fields:
                whose = f"a key of {' and '.join(f'launcher={o}' for o in owners)}" if owners else "not a launcher key"
                takes = ", ".join(f"launcher.{k}" for k in cls.Options.model_fields) or "no launcher.* keys"
                raise BenchError(f"launcher.{key} is {whose}; launcher={name} takes {takes}")
    opts = validated(cls.Options, options, f"launcher={name}")
    com = validated(Common, common, "launcher")
    launcher = cls(opts, com)
    launcher.check()
    return launcher


def tail(path: Path | None, lines: int = 8) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_text(errors="replace").rstrip().splitlines()
    return "\n".join(text[-lines:])


def fmt_duration(seconds: float) -> str:
    """``75`` -> ``'1m15s'``, ``3900`` -> ``'1h05m'``: elapsed times and ETAs in progress lines."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
