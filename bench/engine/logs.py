"""What a training stage logs while it runs: per-task loss meters, the trajectory, tracker scalars, progress lines.

The loop keeps each task's training loss summed on the device (:class:`LossMeter`) and reads it once per logging
interval (``train.log_every`` steps) into the stage's :class:`~bench.engine.state.Trajectory`, together with the
weights the balancer reports. The same numbers, already on the host, go to the experiment trackers
(:class:`TrackerFeed`, ``on_log``) and to the plain progress lines (:class:`StageLines`); neither changes training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from bench.engine.console import progress
from bench.engine.state import TrainState, Trajectory
from bench.errors import CellFailed

OnLog = Callable[[int, dict[str, float]], None]  # (step, scalars): a tracker's entry point


class LossMeter:
    """Each task's training loss summed on the device (no host sync per step): over the current logging interval
    (the trajectory's point) and over the current epoch (the balancer's ``end_epoch``)."""

    def __init__(self, names: list[str], device: torch.device):
        self.names = names
        self.interval_sum = {t: torch.zeros((), device=device) for t in names}
        self.interval_n = dict.fromkeys(names, 0)
        self.epoch_sum = {t: torch.zeros((), device=device) for t in names}
        self.epoch_n = dict.fromkeys(names, 0)

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for t, loss in losses.items():
            d = loss.detach()
            self.interval_sum[t] += d
            self.interval_n[t] += 1
            self.epoch_sum[t] += d
            self.epoch_n[t] += 1

    def restore(self, sums: dict[str, torch.Tensor], counts: dict[str, int]) -> None:
        """Continue a logging interval that an epoch boundary cut in two (from a resume file)."""
        for t in self.names:
            self.interval_sum[t] += sums[t].to(self.interval_sum[t].device)
            self.interval_n[t] = int(counts[t])

    def epoch_means(self) -> dict[str, float]:
        """Each task's mean loss over the epoch (one host sync per epoch), and a fresh epoch."""
        means = {t: (self.epoch_sum[t] / self.epoch_n[t]).item() for t in self.names if self.epoch_n[t]}
        for t in self.names:
            self.epoch_sum[t].zero_()
            self.epoch_n[t] = 0
        return means

    def recent(self, traj: Trajectory) -> list[float]:
        """Each task's loss over the interval so far, or its last logged one (for a progress line)."""
        losses = []
        for t in self.names:
            if self.interval_n[t]:
                losses.append((self.interval_sum[t] / self.interval_n[t]).item())
            else:
                last = [v for v in traj.loss[t] if math.isfinite(v)]
                if last:
                    losses.append(last[-1])
        return losses

    def close_interval(self, traj: Trajectory, step: int, weights: dict[str, float]) -> None:
        """Append the interval's mean loss (NaN for a task without a step in it) and ``weights`` to ``traj``."""
        for t, acc in self.interval_sum.items():
            if self.interval_n[t]:
                v = (acc / self.interval_n[t]).item()  # the only host sync: once per logging interval
                if not math.isfinite(v):
                    raise CellFailed(f"loss of task {t!r} became {v} before step {step}; lower train.lr")
                traj.loss[t].append(v)
            else:
                traj.loss[t].append(float("nan"))
            acc.zero_()
            self.interval_n[t] = 0
            traj.weights[t].append(float(weights.get(t, float("nan"))))
        traj.step.append(step)


class TrackerFeed:
    """The scalars ``on_log(step, scalars)`` receives: every logging interval and every epoch's validation."""

    def __init__(self, on_log: OnLog, names: list[str]):
        self.on_log, self.names = on_log, names
        self.tick: tuple[float, int, int] | None = None  # (time, samples, epoch) at the last throughput point

    def start_epoch(self, state: TrainState, now: float) -> None:
        """Throughput restarts with every epoch (``now``: its start): it leaves validation out."""
        self.tick = (now, state.samples, state.epoch)

    def interval(self, state: TrainState, weights: dict[str, float], lr: float) -> None:
        """The logging interval that just closed: each task's mean loss and their sum over the tasks that had one
        (``loss/total``), the weights λ, the backbone's learning rate, and samples/s over the interval's steps in
        this epoch (none when it spans a validation pass). Reads only values already on the host."""
        traj, now = state.traj, time.perf_counter()
        losses = {t: traj.loss[t][-1] for t in self.names}
        scalars = {f"loss/{t}": v for t, v in losses.items()}
        seen = [v for v in losses.values() if math.isfinite(v)]
        if seen:
            scalars["loss/total"] = sum(seen)
        scalars.update({f"weight/{t}": float(weights.get(t, float("nan"))) for t in self.names})
        scalars["lr"] = lr
        tick = self.tick
        if tick is not None and tick[2] == state.epoch and now > tick[0] and state.samples > tick[1]:
            scalars["throughput/samples_per_s"] = (state.samples - tick[1]) / (now - tick[0])
        self.tick = (now, state.samples, state.epoch)
        self.on_log(state.step, scalars)

    def epoch(self, state: TrainState, val: dict[str, dict[str, float]], score: float) -> None:
        """An epoch's validation: the selection score and every metric (``epoch_validation/...``), and the stage's
        mean samples/s so far (training time only, validation left out)."""
        scalars = {"epoch": float(state.epoch), "epoch_validation/score": score}
        if state.train_time > 0:
            scalars["throughput/mean_samples_per_s"] = state.samples / state.train_time
        scalars.update({f"epoch_validation/{t}/{m}": v for t, ms in val.items() for m, v in ms.items()})
        self.on_log(state.step, scalars)


class StageLines:
    """One stage's plain progress lines (:class:`~bench.engine.console.ProgressLines`, when they are due)."""

    def __init__(self, desc: str, n_epochs: int, total_steps: int, state: TrainState):
        self.desc, self.n_epochs, self.total_steps = desc, n_epochs, total_steps
        self.start = self.at = (time.perf_counter(), state.step, state.samples)

    def emit(self, state: TrainState, meter: LossMeter) -> None:
        """Epoch and step of total, the loss summed over the stage's tasks since the last logging interval (one host
        sync, at most once per line), samples/s since the previous line of this stage, and the stage's ETA from its
        steps so far."""
        now = time.perf_counter()
        losses = meter.recent(state.traj)
        t0, step0, _ = self.start
        t1, _, samples1 = self.at
        rate = (state.samples - samples1) / (now - t1) if now > t1 else None
        stage_eta = (now - t0) / (state.step - step0) * (self.total_steps - state.step) if state.step > step0 else None
        self.at = (now, state.step, state.samples)
        where = f"epoch {state.epoch + 1}/{self.n_epochs}, step {state.step}/{self.total_steps}"
        progress.emit(self.desc, where, sum(losses) if losses else None, rate, stage_eta)
