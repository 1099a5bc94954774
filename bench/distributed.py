"""One cell on several processes (``procs=N``): data parallelism for every balancer, gradient-level ones included.

Every process (a *rank*) runs the whole cell, stage by stage, in lockstep: the same plan, the same data, the same
model initialisation. Only the training steps are split: each step draws its global batch as one process would, and
rank r keeps the r-th contiguous slice of every task batch (:func:`shard`). What the ranks must agree on is summed
over them (:mod:`bench.engine.parallel` says what, for which kind of balancer), so the update every rank applies is
the one a single process would apply to the whole batch, up to the order of float additions. Rank 0 alone writes
the store; the other ranks compute into a private scratch folder and read what rank 0 wrote (stages decide together
whether to reuse an entry, :func:`agree`).

Two ways to start the ranks, both through torch's own machinery:

* ``launcher=local procs=N``: :func:`run_ranks` starts N processes on this machine with torch's elastic launcher
  (what ``torchrun --standalone --nproc-per-node N`` runs), the gloo backend on the CPU, NCCL on GPUs;
* ``launcher=slurm procs=N`` (or ``submitit_local``): submitit starts N tasks per cell, and each joins the group
  from submitit's environment (:func:`join_from_submitit`).

Example (one process: the helpers are the identity and the slice is the whole batch):
    >>> import numpy as np
    >>> current().size, shard(np.arange(6)).tolist(), all_sum(torch.ones(2)).tolist()
    (1, [0, 1, 2, 3, 4, 5], [1.0, 1.0])
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError, CellFailed


@dataclass(frozen=True)
class World:
    """The processes of this cell: ``rank`` of ``size``; ``scratch`` is where a rank other than 0 computes stages
    (it never writes the store)."""

    rank: int = 0
    size: int = 1
    scratch: Path | None = None

    @property
    def writer(self) -> bool:
        """True for the one process that writes the store (rank 0)."""
        return self.rank == 0


_WORLD = World()


def current() -> World:
    """The world this process belongs to (one process unless a cell runs on several)."""
    return _WORLD


def shard(idx: np.ndarray, world: World | None = None) -> np.ndarray:
    """This rank's contiguous slice of a global batch's indices (every rank gets ``len(idx) / size`` of them)."""
    w = world or _WORLD
    if w.size == 1:
        return idx
    n = len(idx) // w.size
    return idx[w.rank * n:(w.rank + 1) * n]


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks, the same on every rank (a new tensor; ``t`` itself in one process)."""
    if _WORLD.size == 1:
        return t
    out = t.detach().clone()
    torch.distributed.all_reduce(out)
    return out


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (same shape on all), in rank order."""
    if _WORLD.size == 1:
        return [t]
    out = [torch.empty_like(t) for _ in range(_WORLD.size)]
    torch.distributed.all_gather(out, t.detach().contiguous())
    return out


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a decision the ranks must take together: reuse a stored stage or not)."""
    if _WORLD.size == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------------------------------ joining

def join(threads: int | None = None) -> World:
    """Join the process group that the launcher's environment describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``): gloo on the CPU, NCCL when a GPU is visible. Ranks other than 0 get a
    scratch folder and print no progress."""
    global _WORLD
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    scratch = None
    if rank:
        scratch = Path(tempfile.mkdtemp(prefix=f"bench-rank{rank}-"))
        os.environ["BENCH_PROGRESS"] = "0"
    _WORLD = World(rank, size, scratch)
    return _WORLD


def leave() -> None:
    """Leave the group and remove this rank's scratch folder."""
    global _WORLD
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if _WORLD.scratch is not None:
        shutil.rmtree(_WORLD.scratch, ignore_errors=True)
    _WORLD = World()


def _rank_main(threads: int | None, fn: Callable[..., Any], args: tuple) -> Any:
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(_joined)(threads, fn, args)  # record: a rank's exception reaches the parent's message


def _joined(threads: int | None, fn: Callable[..., Any], args: tuple) -> Any:
    join(threads)
    try:
        return fn(*args)
    finally:
        leave()


def run_ranks(procs: int, threads: int | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on ``procs`` processes of this machine (torch's elastic launcher, as ``torchrun --standalone``
    starts them), each with ``threads`` torch threads; returns rank 0's value. A rank that dies (killed, out of
    memory) stops the others and raises one :class:`CellFailed` line naming it; what the cell finished is kept."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=procs, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=f"bench-{os.getpid()}-{time.time_ns()}",
                          max_restarts=0, monitor_interval=0.2, start_method="spawn")
    try:
        out = elastic_launch(config, _rank_main)(threads, fn, args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        how = (f"killed by signal {failure.signal_name()}" if failure.exitcode < 0
               else f"exit {failure.exitcode}: {failure.message}".strip().rstrip(":"))
        raise CellFailed(f"rank {rank} of {procs} died ({how}); the others were stopped; rerun the command to "
                         "resume from the last finished epoch") from None
    return out[0]


def join_from_submitit(threads: int | None, fn: Callable[..., Any], args: tuple) -> Any:
    """A submitit task of a cell on several tasks (``tasks_per_node=procs``): export submitit's environment as
    torch's, join, run ``fn(*args)``, leave. Every task returns its value; the launcher reads task 0's."""
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export()
    return _rank_main(threads, fn, args)


def check_procs(procs: int, workers: int | None, batch_sizes: dict[str, int]) -> None:
    """One line before anything runs when ``procs`` cannot work: more processes than this machine's cores (``workers``
    cells at once here; None: the cells run elsewhere, a cluster's allocation decides), or a batch size the
    processes cannot share equally."""
    cores = os.cpu_count() or 1
    if workers is not None and procs * workers > cores and not torch.cuda.is_available():
        raise BenchError(f"procs={procs} x workers={workers} processes exceed the {cores} cores of this machine; "
                         f"use procs={max(1, cores // workers)} or fewer")
    for suite, b in batch_sizes.items():
        if b % procs:
            up = b + procs - b % procs
            raise BenchError(f"procs={procs} cannot split the train.batch_size={b} of suite {suite} into equal "
                             f"slices; use a batch size divisible by {procs} (train.batch_size={up})")
