"""Resume files: a killed training stage or fit continues where it stopped, from state that is never unpickled.

A :class:`~bench.engine.trainer.Trainer` writes ``resume.safetensors`` after every epoch and
:func:`~bench.engine.fitting.optimise` writes ``resume_fit.safetensors`` every ``save_every`` steps, both through
:mod:`bench.safestate` (tensors in safetensors, the rest in JSON). The pickles earlier versions wrote (``resume.pt``,
``resume_fit.pt``) are deleted unread, and a file that cannot be read is ignored with one line: the stage restarts,
which gives the same result.

The trainer's file holds ``{"model", "weighting", "opt", "sched", "rng", "torch_rng", "streams", "sampler_i",
"state", "loss_acc", "loss_cnt"}``, ``state`` being :meth:`TrainState.to_dict`; files of earlier versions (without
the compile counters, or without ``loss_acc``) still resume.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import safestate
from bench.engine.logs import LossMeter
from bench.engine.sampling import IndexStream, TaskSampler
from bench.engine.state import TrainState

RESUME_FILE = "resume.safetensors"  # a training stage's state after its last finished epoch (bench.safestate)
LEGACY_RESUME_FILE = "resume.pt"  # the pickle earlier versions wrote: deleted unread
FIT_RESUME_FILE = "resume_fit.safetensors"  # optimise's state every save_every steps
LEGACY_FIT_RESUME_FILE = "resume_fit.pt"  # its pickle in earlier versions: deleted unread
TRAIN_KIND, FIT_KIND = "resume", "resume_fit"  # what safestate checks a file holds


def read(path: Path | None, legacy: str, kind: str, desc: str, restarts: str = "the stage restarts",
         ) -> dict[str, Any] | None:
    """The state saved at ``path``, or None (start from the beginning). A pickle named ``legacy`` beside it is
    deleted unread; a file that cannot be read is deleted with one line on stderr."""
    if path is None:
        return None
    old = path.with_name(legacy)
    if old.exists():
        old.unlink(missing_ok=True)
        if not path.exists():
            print(f"[{desc}] ignoring {legacy} of an older version (never unpickled); {restarts}", file=sys.stderr)
    if not path.exists():
        return None
    try:
        return safestate.load(path, kind)
    except safestate.StateError as e:
        print(f"[{desc}] ignoring unreadable resume state ({e}); {restarts}", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None


def write(state: dict[str, Any], path: Path, kind: str) -> None:
    """Write a resume file atomically (a reader sees the old state or the whole new one)."""
    safestate.save(state, path, kind)


def training_snapshot(*, model: torch.nn.Module, weighting: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
                      rng: np.random.Generator, streams: dict[str, IndexStream], sampler: TaskSampler,
                      state: TrainState, meter: LossMeter) -> dict[str, Any]:
    """Everything a training stage needs to continue exactly after an epoch boundary."""
    return {"model": model.state_dict(), "weighting": weighting.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "streams": {k: (s.perm, s.pos) for k, s in streams.items()}, "sampler_i": sampler.i,
            "state": state.to_dict(), "loss_acc": meter.interval_sum, "loss_cnt": meter.interval_n}


def restore_training(ck: dict[str, Any], *, model: torch.nn.Module, weighting: torch.nn.Module,
                     opt: torch.optim.Optimizer, sched: Any, rng: np.random.Generator,
                     streams: dict[str, IndexStream], sampler: TaskSampler) -> TrainState:
    """Load what :func:`training_snapshot` saved into freshly built objects; returns the stage's state. (The loss
    meter is built after this, from ``ck["loss_acc"]``, when present.)"""
    model.load_state_dict(ck["model"])
    weighting.load_state_dict(ck["weighting"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    rng.bit_generator.state = ck["rng"]
    torch.set_rng_state(ck["torch_rng"])
    for k, (perm, pos) in ck["streams"].items():
        streams[k].perm, streams[k].pos = perm, pos
    sampler.i = ck["sampler_i"]
    return TrainState.from_dict(ck["state"])
