"""A schedule run's leaderboard rows, step by step: which tasks each step serves, when each task arrived, the
per-seed score matrix R[k][i] read from the records, and the per-seed :class:`~bench.twolevel.Scores` of every
(step, task) and of the reference fine-tunes, for the intervals.

The scores come from the leaderboard's own machinery: each (row, step) and each row's reference point is a
pseudo-row of :class:`bench.report.inference.Inference` whose seeds' predictions are the step's (or the
reference's) ``predictions.npz`` files, so example alignment, ratio-of-sums metrics and the example spaces of
single-input suites are handled exactly as in the leaderboard.

Units: R is a task's primary test metric in the leaderboard's points (fractions ×100, ``min`` metrics raw) and
sign-flipped for ``min`` metrics, so that higher is always better (``sign``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.record import Record
from bench.report.inference import BoardTask, Entry, Inference, RowInfo, row_infos, scale
from bench.report.records import task_specs
from bench.twolevel import Scores

SPLIT = "test"
REFERENCE = "reference"  # the pseudo-row of the reference fine-tunes (the FWT baseline)


@dataclass(frozen=True)
class Step:
    """One step of a row's schedule: its 1-based index, what changed and the tasks served after it."""

    index: int
    arrived: tuple[str, ...]
    retired: tuple[str, ...]
    tasks: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class ScheduleRow:
    """One leaderboard row of a schedule run (its seeds' entries) with its steps and scores."""

    name: str
    info: RowInfo
    steps: tuple[Step, ...]
    primary: dict[str, str]  # task -> its primary metric
    sign: dict[str, float]  # task -> +1 (higher is better) or -1 (a lower-is-better metric, flipped)

    @property
    def strategy(self) -> str:
        return self.info.strategy

    @property
    def seeds(self) -> list[int]:
        return self.info.seeds

    @property
    def last(self) -> Step:
        return self.steps[-1]

    def arrival(self, task: str, upto: int | None = None) -> int:
        """a(i): the step at which ``task`` (last) arrived, at or before step ``upto`` (default: the last)."""
        upto = upto or self.last.index
        return max(s.index for s in self.steps if task in s.arrived and s.index <= upto)

    def retirement(self, task: str) -> int | None:
        """The step that retired ``task`` after its last arrival, or None while it is served to the end."""
        later = [s.index for s in self.steps if task in s.retired and s.index > self.arrival(task)]
        return min(later) if later else None

    @property
    def seen(self) -> list[str]:
        """Every task of the schedule, in arrival order."""
        return list(dict.fromkeys(t for s in self.steps for t in s.arrived))

    def r(self, seed_index: int, step: int, task: str) -> float:
        """R[step][task] of the row's ``seed_index``-th seed from its record (points, sign-flipped): NaN when the
        step does not serve the task."""
        entry = self.info.entries[seed_index]
        values = entry.row.schedule[step - 1].metrics.get(SPLIT, {}).get(task)
        return self._signed(task, values)

    def reference(self, seed_index: int, task: str) -> float:
        """S_i: the task's single-task fine-tune from θ0 (points, sign-flipped), NaN when the record has none."""
        ref = self.info.entries[seed_index].row.schedule_reference or {}
        return self._signed(task, ref.get("metrics", {}).get(SPLIT, {}).get(task))

    def _signed(self, task: str, values: dict | None) -> float:
        metric = self.primary[task]
        if not values or metric not in values:
            return float("nan")
        direction = "max" if self.sign[task] > 0 else "min"
        return self.sign[task] * scale(direction) * float(values[metric])

    def matrix(self) -> np.ndarray:
        """R per seed: [seeds, steps, tasks (``seen`` order)] in points, sign-flipped; NaN where not served."""
        tasks = self.seen
        return np.array([[[self.r(s, k.index, t) for t in tasks] for k in self.steps]
                         for s in range(len(self.info.entries))])


def schedule_rows(records: list[Record]) -> list[ScheduleRow]:
    """The rows of ``records`` that carry a schedule, one per leaderboard row (name, configuration), in the
    records' row order."""
    specs = task_specs(records)
    out = []
    for name, info in row_infos(records).items():
        if not all(e.row.schedule for e in info.entries):
            continue
        first = info.entries[0].row.schedule
        steps = tuple(Step(s.step, tuple(s.arrived), tuple(s.retired), tuple(s.tasks)) for s in first)
        tasks = list(dict.fromkeys(t for s in steps for t in s.arrived))
        primary = {t: specs[t]["primary"] for t in tasks}
        sign = {t: (-1.0 if specs[t]["metrics"].get(primary[t]) == "min" else 1.0) for t in tasks}
        out.append(ScheduleRow(name, info, steps, primary, sign))
    return out


def has_schedule(records: list[Record]) -> bool:
    """Whether any row of ``records`` was made under a task schedule."""
    return any(row.schedule for r in records for row in r.rows.values())


def pseudo(row: str, step: int | str) -> str:
    """The name of a (row, step) pseudo-row (``step`` = :data:`REFERENCE`: the row's reference fine-tunes)."""
    return f"{row}@{step}"


class StepScores:
    """Per-seed :class:`Scores` of every (row, step, task) and reference, in table units (not sign-flipped: the
    transfer formulas carry the sign in their coefficients), or None where predictions are missing."""

    def __init__(self, rows: list[ScheduleRow], records: list[Record], level: float) -> None:
        specs = task_specs(records)
        tasks = list(dict.fromkeys(t for r in rows for t in r.seen))
        board_tasks = {t: BoardTask(t, t, SPLIT, specs[t]) for t in tasks}
        infos: dict[str, RowInfo] = {}
        for r in rows:
            for k in r.steps:
                infos[pseudo(r.name, k.index)] = _with_predictions(
                    r.info, lambda e, k=k: e.row.schedule[k.index - 1].predictions)
            infos[pseudo(r.name, REFERENCE)] = _with_predictions(
                r.info, lambda e: (e.row.schedule_reference or {}).get("predictions"))
        self.rows = {r.name: r for r in rows}
        self.inference = Inference(infos, board_tasks, list(infos), None, [], {}, level)

    def step(self, row: str, step: int, task: str) -> Scores | None:
        return self.inference.scores(pseudo(row, step), f"{task}/{self.rows[row].primary[task]}")

    def reference(self, row: str, task: str) -> Scores | None:
        return self.inference.scores(pseudo(row, REFERENCE), f"{task}/{self.rows[row].primary[task]}")


def _with_predictions(info: RowInfo, predictions) -> RowInfo:
    """``info`` whose seeds' rows point at other predictions files (a step's, or the reference's)."""
    entries = [Entry(e.seed, e.record, e.row.model_copy(update={"predictions": predictions(e) or {}}))
               for e in info.entries]
    return RowInfo(info.name, info.origin, info.strategy, entries)
