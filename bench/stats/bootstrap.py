"""The bootstrap replicates of a table: drawn once, shared by every row, so that differences are paired.

:func:`draw` makes one set of ``B`` replicates per table (seed positions, then per task the test examples, each
resampled with replacement); :func:`replicate_scores` scores one row on one task on every replicate; :func:`interval`
is a row's percentile interval. The package docstring of :mod:`bench.stats` states the whole protocol.
"""

from __future__ import annotations

import numbers
import zlib
from dataclasses import dataclass

import numpy as np

from bench.errors import BenchError
from bench.stats.ratios import Ratios
from bench.stats.vectorised import metric_matrix

LEVEL = 0.95  # default confidence level


def check_level(level: float) -> float:
    """Return ``level`` as a float if it is a valid confidence level, else raise :class:`BenchError`.

    >>> check_level(0.9)
    0.9
    """
    ok = isinstance(level, numbers.Real) and not isinstance(level, bool) and 0 < level < 1  # NaN fails 0 < level
    if not ok:
        raise BenchError(f"confidence level {level!r} must lie strictly between 0 and 1, e.g. level=0.95")
    return float(level)


@dataclass(frozen=True, eq=False)
class Draws:
    """One set of bootstrap replicates shared by every row of a table.

    ``examples[task]`` is an int array [B, n_task] of resampled example indices, ``seeds`` an int array [B, n_seeds]
    of resampled seed positions (a column of zeros for a single seed), ``over_seeds`` whether seeds are resampled.
    """

    examples: dict[str, np.ndarray]
    seeds: np.ndarray
    B: int
    over_seeds: bool

    def __post_init__(self) -> None:
        if self.seeds.ndim != 2 or self.seeds.shape[0] != self.B:
            raise ValueError(f"seeds must have shape [B={self.B}, n_seeds], got {self.seeds.shape}")
        for task, ex in self.examples.items():
            if ex.ndim != 2 or ex.shape[0] != self.B:
                raise ValueError(f"examples[{task!r}] must have shape [B={self.B}, n], got {ex.shape}")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # shared by every row of a table: an in-place edit would silently unpair them
    return a


def draw(n_examples: dict[str, int], n_seeds: int, B: int = 2000, seed: int = 0) -> Draws:
    """Draw the bootstrap replicates of a table with ``n_examples[task]`` test examples per task and ``n_seeds`` seeds.

    Deterministic in ``seed``. Each task's examples come from their own stream, keyed by ``seed`` and the task name,
    so a task's replicates (and intervals) do not change when tasks are added to or removed from the table.

    >>> d = draw({"a": 5}, n_seeds=3, B=4)
    >>> d.examples["a"].shape, d.seeds.shape, d.over_seeds
    ((4, 5), (4, 3), True)
    """
    if B < 1 or n_seeds < 1:
        raise ValueError(f"need B >= 1 and n_seeds >= 1, got B={B}, n_seeds={n_seeds}")
    over_seeds = n_seeds > 1
    if over_seeds:
        seeds = np.random.default_rng(seed).integers(0, n_seeds, size=(B, n_seeds))
    else:
        seeds = np.zeros((B, 1), dtype=np.int64)
    examples = {}
    for task, n in n_examples.items():
        if n < 1:
            raise ValueError(f"task {task!r} has {n} test examples; need at least 1")
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        examples[task] = _readonly(rng.integers(0, n, size=(B, n)))
    return Draws(examples=examples, seeds=_readonly(seeds), B=B, over_seeds=over_seeds)


def replicate_scores(name: str | Ratios, target: np.ndarray | None, preds: np.ndarray, draws: Draws,
                     task: str) -> np.ndarray:
    """Score one row on one task for every replicate: ``[B]`` means over resampled seeds of the resampled metric.

    ``preds`` is [n_seeds, n]: one prediction array per seed, in the seed order the draws were made for; for a
    ratio-of-sums metric (:class:`~bench.stats.ratios.Ratios`) each seed's per-example stats, [n_seeds, n, k], and
    ``target`` is not used.
    """
    preds = np.asarray(preds)
    idx = draws.examples[task]
    ndim = 3 if isinstance(name, Ratios) else 2
    if preds.ndim != ndim or preds.shape[0] != draws.seeds.shape[1]:
        what = "n, k" if ndim == 3 else "n"
        raise ValueError(f"preds must have shape [n_seeds={draws.seeds.shape[1]}, {what}], got {preds.shape}")
    n = preds.shape[1] if isinstance(name, Ratios) else len(target)
    if preds.shape[1] != n or idx.shape[1] != n:
        raise ValueError(f"task {task!r}: target has {n} examples, preds {preds.shape[1]}, draws {idx.shape[1]}")
    # the metric of seed s on replicate b does not depend on how often s was drawn: compute each once, then gather
    per_seed = np.full((preds.shape[0], draws.B), np.nan)
    for s in np.unique(draws.seeds):
        per_seed[s] = metric_matrix(name, target, preds[s], idx)
    return per_seed[draws.seeds, np.arange(draws.B)[:, None]].mean(axis=1)


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; (nan, nan) when none is finite).

    >>> interval(np.arange(101), level=0.9)
    (5.0, 95.0)
    """
    level = check_level(level)
    r = np.asarray(replicates, dtype=float)
    if not np.any(~np.isnan(r)):
        return float("nan"), float("nan")
    # round away the binary noise of 1 - level (1 - 0.9 = 0.0999...98), which would otherwise shift a percentile
    tail = round((1 - level) / 2, 12)
    lo, hi = np.nanquantile(r, [tail, 1 - tail])
    return float(lo), float(hi)
