"""Backward transfer, forgetting, forward transfer and the final-step average of a schedule row, each a mean over
seeds with its two-level interval (docs/dynamic_tasks.md has the definitions; docs/statistics.md the intervals).

With R[k][i] the primary test score of task i after step k (points, sign-flipped so higher is better), a(i) the
step task i arrived, K the last step and S_i task i's single-task fine-tune from θ0:

* BWT = mean over tasks with a(i) < K still served at K of R[K][i] − R[a(i)][i] (Lopez-Paz & Ranzato, 2017);
* forgetting = mean over the same tasks of max_{a(i) ≤ l < K} R[l][i] − R[K][i] (Chaudhry et al., 2018);
* FWT = mean over tasks with a(i) > 1 of R[a(i)][i] − S_i;
* final = mean over the tasks served at K of R[K][i].

Each is computed per seed from the records' step metrics and averaged over seeds. Its interval is
:func:`bench.twolevel.estimate` of the same linear combination of per-seed scores: every term is a score of one
model on one task's test examples, so the combination's jackknife pseudo-values are the same combination of the
models' pseudo-values (a difference of two models on the same examples has the difference of their pseudo-values:
the test-set noise the two share cancels). Forgetting's maximum is taken per seed, and its term is the chosen step's
scores (the choice itself is treated as fixed, which slightly understates the noise of the maximum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from bench import twolevel
from bench.report.inference import scale
from bench.report.schedule.rows import ScheduleRow, StepScores
from bench.twolevel import Scores

MEASURES = ("final", "bwt", "forgetting", "fwt")


@dataclass(frozen=True)
class Value:
    """A mean over seeds with its two-level interval (NaN bounds without predictions or without terms)."""

    mean: float
    per_seed: tuple[float, ...]
    lo: float = math.nan
    hi: float = math.nan
    seed_sd: float = math.nan
    test_se: float = math.nan
    df: float = math.nan
    test_only: bool = False
    tasks: tuple[str, ...] = ()  # the tasks it averages over

    @property
    def n(self) -> int:
        return len(self.per_seed)


def bwt_tasks(row: ScheduleRow) -> list[str]:
    """Tasks that arrived before the last step and are still served at it (BWT's and forgetting's tasks)."""
    last = row.last
    return [t for t in last.tasks if row.arrival(t) < last.index]


def fwt_tasks(row: ScheduleRow) -> list[str]:
    """Tasks that arrived after the first step (FWT's tasks)."""
    return [t for t in row.seen if row.arrival(t) > 1]


def per_seed(row: ScheduleRow, measure: str, seed_index: int) -> float:
    """One seed's value of ``measure`` from its record's step metrics (the hand computation of the definitions)."""
    K, s = row.last.index, seed_index
    if measure == "final":
        return float(np.mean([row.r(s, K, t) for t in row.last.tasks]))
    if measure == "bwt":
        tasks = bwt_tasks(row)
        return float(np.mean([row.r(s, K, t) - row.r(s, row.arrival(t), t) for t in tasks])) if tasks else math.nan
    if measure == "forgetting":
        tasks = bwt_tasks(row)
        return float(np.mean([max(row.r(s, l, t) for l in range(row.arrival(t), K)) - row.r(s, K, t)
                              for t in tasks])) if tasks else math.nan
    if measure == "fwt":
        tasks = fwt_tasks(row)
        return float(np.mean([row.r(s, row.arrival(t), t) - row.reference(s, t) for t in tasks])) if tasks \
            else math.nan
    raise ValueError(f"unknown measure {measure!r}; valid: {', '.join(MEASURES)}")


def terms(row: ScheduleRow, measure: str, scores: StepScores) -> list[tuple[float, Scores]] | None:
    """``measure`` as Σ c · (mean over seeds of scores) (table units; c carries the 1/T and the sign), or None when
    a score has no predictions or the measure has no task."""
    K = row.last.index
    step = lambda k, t: scores.step(row.name, k, t)  # noqa: E731
    pairs: list[tuple[float, Scores | None]] = []
    if measure == "final":
        tasks = list(row.last.tasks)
        pairs = [(row.sign[t] / len(tasks), step(K, t)) for t in tasks]
    elif measure == "bwt":
        tasks = bwt_tasks(row)
        for t in tasks:
            pairs += [(row.sign[t] / len(tasks), step(K, t)), (-row.sign[t] / len(tasks), step(row.arrival(t), t))]
    elif measure == "forgetting":
        tasks = bwt_tasks(row)
        for t in tasks:
            best = _best_per_seed([step(l, t) for l in range(row.arrival(t), K)], row.sign[t])
            pairs += [(row.sign[t] / len(tasks), best), (-row.sign[t] / len(tasks), step(K, t))]
    elif measure == "fwt":
        tasks = fwt_tasks(row)
        for t in tasks:
            pairs += [(row.sign[t] / len(tasks), step(row.arrival(t), t)),
                      (-row.sign[t] / len(tasks), scores.reference(row.name, t))]
    if not pairs or any(s is None for _, s in pairs):
        return None
    return [(c, s) for c, s in pairs if s is not None]


def _best_per_seed(candidates: list[Scores | None], sign: float) -> Scores | None:
    """Per seed, the candidate scoring best (after ``sign``): its score and its pseudo-values, as one Scores."""
    if not candidates or any(c is None for c in candidates):
        return None
    ok = [c for c in candidates if c is not None]
    pick = np.argmax(np.stack([sign * c.x for c in ok]), axis=0)  # [seeds]: the step each seed's maximum is at
    x = np.array([ok[j].x[s] for s, j in enumerate(pick)])
    phi = {space: np.stack([ok[j].phi[space][s] for s, j in enumerate(pick)]) for space in ok[0].phi}
    return Scores(ok[0].seeds, x, phi)


def value(row: ScheduleRow, measure: str, scores: StepScores | None, level: float) -> Value:
    """``measure`` of ``row``: the mean over seeds and, where predictions allow, its two-level interval."""
    seeds = tuple(per_seed(row, measure, s) for s in range(len(row.info.entries)))
    mean = float(np.mean(seeds)) if not any(math.isnan(v) for v in seeds) else math.nan
    tasks = {"final": list(row.last.tasks), "bwt": bwt_tasks(row), "forgetting": bwt_tasks(row),
             "fwt": fwt_tasks(row)}[measure]
    combination = terms(row, measure, scores) if scores is not None and not math.isnan(mean) else None
    if combination is None:
        return Value(mean, seeds, tasks=tuple(tasks))
    return _interval(mean, seeds, twolevel.estimate(combination), level, tuple(tasks))


def step_value(row: ScheduleRow, step: int, task: str, scores: StepScores | None, level: float) -> Value:
    """R[step][task] of ``row``: mean over seeds and interval (of the sign-flipped score)."""
    seeds = tuple(row.r(s, step, task) for s in range(len(row.info.entries)))
    got = scores.step(row.name, step, task) if scores is not None else None
    if got is None or any(math.isnan(v) for v in seeds):
        return Value(float(np.mean(seeds)), seeds, tasks=(task,))
    v = _interval(float(np.mean(seeds)), seeds, twolevel.estimate([(row.sign[task], got)]), level, (task,))
    # cut to the metric's range as the leaderboard cuts a task column (a correlation cannot pass 100 points)
    metric = row.primary[task]
    low, high = (row.sign[task] * b * scale("max" if row.sign[task] > 0 else "min")
                 for b in twolevel.BOUNDS.get(metric, (-math.inf, math.inf)))
    low, high = min(low, high), max(low, high)
    return replace(v, lo=max(v.lo, low), hi=min(v.hi, high))


def _interval(mean: float, seeds: tuple[float, ...], est: twolevel.Estimate, level: float,
              tasks: tuple[str, ...]) -> Value:
    # the interval is centred on the estimate's value, which the predictions give (the records' metrics agree)
    lo, hi = est.interval(level)
    return Value(mean, seeds, lo, hi, est.seed_sd, est.test_se, est.df, est.test_only, tasks)

