"""A training stage's state between steps: a typed record of where the loop is and what it has measured.

:class:`TrainState` is what the trainer advances and what its resume file keeps (:mod:`bench.engine.resume`). On
disk it is the plain dict of :meth:`TrainState.to_dict`, whose keys are the field names; :meth:`TrainState.from_dict`
reads that dict back, also one written before a field existed (the field keeps its default), so resume files of
earlier versions still resume.

Example (a state that went through a resume file's dict and back):
    >>> s = TrainState.start(["a", "b"], {"a": 1.0})
    >>> s.step, s.traj.step, s.traj.weights
    (0, [0], {'a': [1.0], 'b': [nan]})
    >>> TrainState.from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

PHASES = ("data", "forward", "weighting", "backward", "optimizer")  # a step's timed phases (PhaseTimer)


@dataclass
class Trajectory:
    """What the loop logged at every logging interval: the step, each task's mean loss and weight."""

    step: list[int] = field(default_factory=list)
    weights: dict[str, list[float]] = field(default_factory=dict)
    loss: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "weights": self.weights, "loss": self.loss}


@dataclass
class TrainState:
    """Where a training stage is (epoch, step), how its selection stands, and its counters.

    ``history`` has one entry per epoch, ``{"epoch", "score", "validation"}``; ``best_state`` the model's weights at
    the best epoch (on the CPU). The ``compile_*`` fields count the steps during which torch.compile compiled (inside
    ``train_time``), which telemetry sets apart; ``timers`` and ``compile_timers`` sum each phase's seconds."""

    epoch: int = 0
    step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    traj: Trajectory = field(default_factory=Trajectory)
    train_time: float = 0.0
    samples: int = 0
    task_samples: dict[str, int] = field(default_factory=dict)  # examples that carried each task's label
    tokens: int = 0
    bad_epochs: int = 0
    compile_time: float = 0.0
    compile_steps: int = 0
    compile_samples: int = 0
    compile_tokens: int = 0
    compile_timers: dict[str, float] = field(default_factory=dict)
    timers: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    #: the number of steps where the balancer degenerated, per event (:meth:`bench.weighting.Balancer.flag`)
    degenerate: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, tasks: list[str], weights: dict[str, float]) -> TrainState:
        """A stage's first state: its trajectory starts at step 0 with the weights the balancer starts from (σ² = 1,
        w = 1), so that it shows where they moved from, and no loss yet."""
        traj = Trajectory([0], {t: [float(weights.get(t, math.nan))] for t in tasks}, {t: [math.nan] for t in tasks})
        return cls(traj=traj)

    def record_epoch(self, score: float, validation: dict[str, dict[str, float]],
                     weights: dict[str, torch.Tensor]) -> None:
        """Count a finished epoch's validation: the history, and the best epoch (its weights copied to the CPU)."""
        self.history.append({"epoch": self.epoch, "score": score, "validation": validation})
        if score > self.best_score:
            self.best_score, self.best_epoch = score, self.epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1

    def to_dict(self) -> dict[str, Any]:
        """The plain dict a resume file keeps (keys: the field names)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["traj"] = self.traj.to_dict()
        return out

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        """What :meth:`to_dict` wrote, in this version or an earlier one (a field it lacks keeps its default)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        values["traj"] = Trajectory(**saved["traj"])
        return cls(**values)
