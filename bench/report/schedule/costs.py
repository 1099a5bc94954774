"""What each step of a schedule row cost, next to ``retrain``'s: training samples seen and wall time, mean over seeds.

A step's cost is what the stages *first used at that step* spent when they were computed (the driver's
``ScheduleStep.spent`` and ``wall_time_s``): a stage read from the store counts at the step that first used it, so
a rerun reports the same costs and a row's steps add up to its total. The reference fine-tunes (the FWT baseline)
are the report's, not the row's, and are not counted. The ratio divides by the ``retrain`` row of the same
configuration (data, budget and suite settings, so the same schedule): the upper reference whose cost grows with
every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.report.schedule.rows import ScheduleRow

RETRAIN = "retrain"
COSTS = ("train_samples_seen", "wall_time_s")


@dataclass(frozen=True)
class StepCost:
    """Mean over seeds of one step's samples seen and wall time, and their ratio to retrain's same step."""

    step: int
    arrived: tuple[str, ...]
    retired: tuple[str, ...]
    tasks: tuple[str, ...]
    train_samples_seen: float
    wall_time_s: float
    samples_ratio: float = math.nan
    wall_ratio: float = math.nan


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def step_costs(row: ScheduleRow) -> list[StepCost]:
    """The row's cost per step (mean over its seeds), without ratios."""
    out = []
    for k in row.steps:
        entries = [e.row.schedule[k.index - 1] for e in row.info.entries]
        samples = _mean([float(s.spent.get("train_samples_seen", 0) or 0) for s in entries])
        wall = _mean([float(s.wall_time_s or 0.0) for s in entries])
        out.append(StepCost(k.index, k.arrived, k.retired, k.tasks, samples, wall))
    return out


def retrain_of(row: ScheduleRow, rows: list[ScheduleRow]) -> ScheduleRow | None:
    """The ``retrain`` row with the row's data, budget and suite settings (its schedule), or None."""
    same = [r for r in rows if r.strategy == RETRAIN and r.info.data_fp == row.info.data_fp
            and r.info.budget_fp == row.info.budget_fp
            and r.info.config.get("suite") == row.info.config.get("suite")]
    return same[0] if len(same) == 1 else None


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def with_ratios(row: ScheduleRow, rows: list[ScheduleRow]) -> list[StepCost]:
    """The row's step costs, each next to the same step of its ``retrain`` row (NaN ratios without one)."""
    mine = step_costs(row)
    ref = retrain_of(row, rows)
    if ref is None or len(ref.steps) != len(row.steps):
        return mine
    theirs = step_costs(ref)
    return [StepCost(m.step, m.arrived, m.retired, m.tasks, m.train_samples_seen, m.wall_time_s,
                     _ratio(m.train_samples_seen, t.train_samples_seen), _ratio(m.wall_time_s, t.wall_time_s))
            for m, t in zip(mine, theirs)]


def totals(row: ScheduleRow, rows: list[ScheduleRow]) -> dict[str, float]:
    """Samples seen and wall time over every step (mean over seeds), and their ratios to retrain's totals."""
    mine = step_costs(row)
    out = {"train_samples_seen": sum(c.train_samples_seen for c in mine),
           "wall_time_s": sum(c.wall_time_s for c in mine), "samples_ratio": math.nan, "wall_ratio": math.nan}
    ref = retrain_of(row, rows)
    if ref is not None:
        theirs = step_costs(ref)
        out["samples_ratio"] = _ratio(out["train_samples_seen"], sum(c.train_samples_seen for c in theirs))
        out["wall_ratio"] = _ratio(out["wall_time_s"], sum(c.wall_time_s for c in theirs))
    return out
