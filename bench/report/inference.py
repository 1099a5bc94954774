"""Intervals, paired tests and winner marks of one leaderboard, from the rows' per-example predictions.

The numbers come from :mod:`bench.twolevel` (docs/statistics.md explains the protocol); this module decides *what*
is compared with what:

* **rows and seeds**: a row is one configuration (:func:`bench.report.records.assign_names`); two rows with the same
  seeds are paired seed by seed (seed s gives every strategy the same heads and batch order); rows with other seeds
  are compared as independent groups (Welch);
* **examples**: per task, the first row that has predictions fixes the example ids; other rows are aligned to them
  by id, and a row whose ids or targets differ gets no interval for that task (a note says so); the tasks of a
  single-input suite share one example space, so their test-set errors are treated as the correlated errors they are;
* **metrics**: a metric with a recipe in its task's spec (entity F1, micro/macro F1, token accuracy: a ratio of
  sums over examples) is computed from the per-example stats of ``predictions.npz`` (:mod:`bench.stats.ratios`),
  and never by the Wilson interval or McNemar test, which assume one right-or-wrong outcome per example; any other
  metric from target and prediction by name;
* **units**: estimates are in the table's units (points: ``max`` metrics ×100, ``min`` metrics raw).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from bench import stats, twolevel
from bench.errors import BenchError
from bench.record import Record
from bench.report.groups import group_of, is_group_key, restrict
from bench.report.predictions import OLD_RECORDS, BoardTask, Entry, Predictions, align
from bench.report.records import (
    BUDGET_FIELDS,
    budget_fingerprint,
    config_of,
    data_fingerprint,
    is_baseline_row,
    row_name,
    row_origin,
)

# what the report's other modules import from here (the arrays moved to bench.report.predictions)
__all__ = ["OLD_RECORDS", "TESTS", "BoardTask", "Entry", "Inference", "RowInfo", "budget_means", "group_rows",
           "row_infos", "scale"]


def scale(direction: str) -> float:
    """Reported units: fractions (``max`` metrics) ×100, raw ``min`` metrics (mse) unchanged."""
    return 100.0 if direction == "max" else 1.0


# ----------------------------------------------------------------------------------------------- rows


@dataclass
class RowInfo:
    """Everything about a leaderboard row that is not a number of the table."""

    name: str
    origin: str
    strategy: str
    entries: list[Entry] = field(default_factory=list)
    candidate: bool = False  # a Δm% baseline candidate (the separate strategy's separate row)

    @property
    def seeds(self) -> list[int]:
        return [e.seed for e in self.entries]

    @property
    def first(self) -> Record:
        return self.entries[0].record

    @property
    def config(self) -> dict:
        return config_of(self.first)

    @property
    def data_fp(self) -> str:
        return data_fingerprint(self.first)

    @property
    def budget_fp(self) -> str:
        return budget_fingerprint(self.first)

    @property
    def code_versions(self) -> list[str]:
        versions: set[str] = set()
        for e in self.entries:
            if e.row.code_versions:
                versions |= set(e.row.code_versions)
            elif e.record.code_version:
                versions.add(e.record.code_version)
        return sorted(versions)

    @property
    def schema_1(self) -> bool:
        return all(e.record.legacy for e in self.entries)


def row_infos(records: list[Record]) -> dict[str, RowInfo]:
    """Row name -> :class:`RowInfo`, entries sorted by seed (records are the newest per configuration and seed)."""
    infos: dict[str, RowInfo] = {}
    for record in records:
        for key, row in record.rows.items():
            name = row_name(record, key)
            info = infos.setdefault(name, RowInfo(name, row_origin(record, key), record.strategy))
            info.entries.append(Entry(record.seed, record, row))
            info.candidate = info.candidate or is_baseline_row(record, key)
    for info in infos.values():
        info.entries.sort(key=lambda e: e.seed)
    return infos


def budget_means(info: RowInfo) -> dict[str, float]:
    """Mean over seeds of what the row ``spent`` (NaN when no record of the row has them)."""
    out = {}
    for key in BUDGET_FIELDS:
        values = [float(e.row.spent[key]) for e in info.entries
                  if e.row.spent and isinstance(e.row.spent.get(key), (int, float))]
        out[key] = float(np.mean(values)) if values else math.nan
    return out


# ----------------------------------------------------------------------------------------------- estimates


def _recipes(name: str, bt: BoardTask) -> dict[str, stats.Ratios]:
    """The task's parsed ratio-of-sums recipes; a bad one stops the report with one line naming the task."""
    try:
        return stats.recipes_of(bt.spec)
    except BenchError as exc:
        raise BenchError(f"task {name!r} of the records: {exc}") from None


JOINT_SPACE = "examples"  # the one example space of a single-input suite's tasks


class Inference:
    """Two-level estimates (:mod:`bench.twolevel`) of every (row, column) of one board, computed on demand.

    Columns are ``"<board task>/<metric>"``, ``"avg"``, ``"delta_m"`` and, on a board whose tasks fall in several
    ``groups``, ``"delta_m@<group>"`` (the keys of the leaderboard table). Every column of a row is a linear
    combination of per-seed metric values: a task metric itself, Avg the mean of the tasks' primaries, Δm% the
    baseline-relative differences linearised at the baseline's seed means (its point estimate is exactly the table's
    Δm%, computed on seed means), a group's Δm% the same over that group's tasks only.
    """

    def __init__(self, infos: dict[str, RowInfo], board_tasks: dict[str, BoardTask], order: list[str],
                 avg_tasks: list[str] | None, delta_metrics: list[tuple[str, str]], baselines: dict[str, str | None],
                 level: float, groups: dict[str, tuple[str, ...]] | None = None) -> None:
        self.infos, self.board_tasks, self.level = infos, board_tasks, level
        self.groups = groups or {}  # group -> its tasks: the per-group Δm% columns (:mod:`bench.report.groups`)
        self.avg_tasks, self.delta_metrics, self.baselines = avg_tasks, delta_metrics, baselines
        self.reasons: dict[str, dict[str, str]] = {}  # row -> board task -> why it has no estimate
        self.data: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # (row, task) -> target, preds
        self.stats: dict[tuple[str, str], np.ndarray] = {}  # (row, task) -> per-example stats [seeds, n, k]
        # task -> metric -> its ratio-of-sums recipe: such metrics are computed from the stats, not target and pred
        self.recipes = {t: _recipes(t, bt) for t, bt in board_tasks.items()}
        loader = Predictions()
        self.references: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}  # task -> (row, ids, target)
        for name in order:  # the table's order: the first row with predictions fixes a task's examples
            for bt in board_tasks.values():
                arrays = loader.row_arrays(infos[name].entries, bt)
                if isinstance(arrays, str):
                    self.reasons.setdefault(name, {})[bt.name] = arrays
                    continue
                ids, target, preds = arrays.ids, arrays.target, arrays.preds
                if bt.name not in self.references:
                    self.references[bt.name] = (name, ids, target)
                ref_row, ref_ids, ref_target = self.references[bt.name]
                position = align(ids, ref_ids)
                if position is None:
                    self.reasons.setdefault(name, {})[bt.name] = f"evaluated on other {bt.task} examples than {ref_row}"
                    continue
                if not np.array_equal(target[position], ref_target):
                    self.reasons.setdefault(name, {})[bt.name] = f"other {bt.task} targets than {ref_row}"
                    continue
                self.data[(name, bt.name)] = (ref_target, preds[:, position])
                if arrays.stats is not None:
                    self.stats[(name, bt.name)] = arrays.stats[:, position]
        loader.close()
        self.n_examples = {task: len(ref[1]) for task, ref in self.references.items()}
        self.spaces = self._spaces(order)
        self._scores: dict[tuple[str, str], twolevel.Scores | None] = {}
        self._estimates: dict[tuple, twolevel.Estimate | None] = {}

    def _spaces(self, order: list[str]) -> dict[str, str]:
        """Board task -> example space. The tasks of a single-input suite are scored on the same inputs, so their
        test-set errors are correlated and are resampled jointly (one space) when their example ids agree; every
        other task (multi-input suites, extra splits) has a space of its own."""
        kinds = {self.infos[n].config.get("suite", {}).get("kind") for n in order}
        main = [t for t, bt in self.board_tasks.items() if not bt.extra and t in self.references]
        if kinds == {"single_input"} and main:
            first = self.references[main[0]][1]
            if all(np.array_equal(self.references[t][1], first) for t in main):
                return {t: (JOINT_SPACE if t in main else t) for t in self.board_tasks}
        return {t: t for t in self.board_tasks}

    @property
    def joint(self) -> bool:
        return JOINT_SPACE in self.spaces.values()

    def has(self, row: str, task: str) -> bool:
        return (row, task) in self.data

    def any(self) -> bool:
        return bool(self.data)

    # -- per-seed scores

    def scores(self, row: str, key: str) -> twolevel.Scores | None:
        """Per-seed scores of ``row`` in a task column or Avg (table units), or None when they cannot be computed."""
        if (row, key) not in self._scores:
            self._scores[(row, key)] = self._compute(row, key)
        return self._scores[(row, key)]

    def _compute(self, row: str, key: str) -> twolevel.Scores | None:
        if key == "avg":
            if not self.avg_tasks:
                return None
            parts = [self.scores(row, f"{t}/{self.board_tasks[t].spec['primary']}") for t in self.avg_tasks]
            if any(p is None for p in parts):
                return None
            return twolevel.Scores.weighted([(1.0 / len(parts), p) for p in parts])
        task, metric = key.rsplit("/", 1)
        if (row, task) not in self.data or metric not in self.board_tasks[task].spec["metrics"]:
            return None
        target, preds = self.data[(row, task)]
        factor = scale(self.board_tasks[task].spec["metrics"][metric])
        recipe = self.recipes[task].get(metric)
        if recipe is not None:  # a ratio of sums over the examples, from the stored per-example stats
            target, preds = None, self.stats[(row, task)]
        if np.shape(preds)[-2 if recipe is not None else -1] < 2:  # one test example: no test-set term, no interval
            return None
        return twolevel.Scores.of(recipe or metric, target, preds, self.infos[row].seeds, self.spaces[task], factor)

    def is_ratio(self, key: str) -> bool:
        """Whether column ``key`` (``"<task>/<metric>"``) is a ratio-of-sums metric (no Wilson, no McNemar)."""
        task, _, metric = key.rpartition("/")
        return metric in self.recipes.get(task, {})

    def terms(self, row: str, key: str) -> list[tuple[float, twolevel.Scores]] | None:
        """The column as Σ c · (row mean of scores): one term for a task or Avg, two for Δm% (row − baseline); a
        group's Δm% is Δm% restricted to the group's tasks."""
        if key != "delta_m" and not is_group_key(key):
            scores = self.scores(row, key)
            return None if scores is None else [(1.0, scores)]
        base = self.baselines.get(row)
        if base is None:
            return None
        metrics = self.delta_metrics if key == "delta_m" else restrict(self.delta_metrics, self.groups[group_of(key)])
        mine, theirs = {}, {}
        for task, metric in metrics:
            mine[(task, metric)] = self.scores(row, f"{task}/{metric}")
            theirs[(task, metric)] = self.scores(base, f"{task}/{metric}")
            if mine[(task, metric)] is None or theirs[(task, metric)] is None:
                return None
        directions = {(t, m): self.board_tasks[t].spec["metrics"][m] for t, m in metrics}
        return twolevel.delta_m_terms(mine, theirs, directions)

    # -- estimates and tests

    def estimate(self, row: str, key: str) -> twolevel.Estimate | None:
        """The two-level estimate of ``row`` in column ``key`` (Δm%: against the row's baseline)."""
        return self._combination((row, key), lambda: self.terms(row, key))

    def difference(self, a: str, b: str, key: str) -> twolevel.Estimate | None:
        """The two-level estimate of ``a − b`` in column ``key`` (paired seed by seed when they share seeds)."""
        def terms():
            ta, tb = self.terms(a, key), self.terms(b, key)
            return None if ta is None or tb is None else ta + [(-c, s) for c, s in tb]
        return self._combination((a, b, key), terms)

    def _combination(self, cache_key: tuple, terms) -> twolevel.Estimate | None:
        if cache_key not in self._estimates:
            t = terms()
            self._estimates[cache_key] = None if t is None else twolevel.estimate(t)
        return self._estimates[cache_key]

    def interval(self, row: str, key: str) -> tuple[float, float]:
        """The row's ``level`` interval in column ``key``; a task metric's is cut to the metric's range (accuracy
        cannot pass 100, r cannot pass ±100), which keeps the coverage and loses only impossible values."""
        est = self.estimate(row, key)
        if est is None:
            return math.nan, math.nan
        lo, hi = est.interval(self.level)
        if "/" in key:
            low, high = self._range(key)
            lo, hi = max(lo, low), min(hi, high)
        elif key == "avg" and self.avg_tasks:  # the mean of the primaries: within the mean of their ranges
            ranges = [self._range(f"{t}/{self.board_tasks[t].spec['primary']}") for t in self.avg_tasks]
            lo, hi = max(lo, float(np.mean([r[0] for r in ranges]))), min(hi, float(np.mean([r[1] for r in ranges])))
        return lo, hi

    def _range(self, key: str) -> tuple[float, float]:
        """The range of a task metric's column, in its display unit (accuracy ×100 in [0, 100])."""
        task, metric = key.rsplit("/", 1)
        low, high = twolevel.BOUNDS.get(metric, (-math.inf, math.inf))
        recipe = self.recipes[task].get(metric)
        if recipe is not None:  # a known name keeps its range (macro_f1 in [0, 1]); else what the recipe states
            low, high = max(low, recipe.bounds[0]), min(high, recipe.bounds[1])
        factor = scale(self.board_tasks[task].spec["metrics"][metric])
        return low * factor, high * factor

    def wilson(self, row: str, task: str) -> tuple[float, float]:
        """Wilson interval of accuracy (×100) pooled over the row's seeds: k correct of n_seeds × n predictions."""
        if (row, task) not in self.data or self.is_ratio(f"{task}/accuracy"):
            return math.nan, math.nan
        target, preds = self.data[(row, task)]
        lo, hi = stats.wilson(int((preds == target[None, :]).sum()), int(preds.size), self.level)
        return 100.0 * lo, 100.0 * hi

    def paired_test(self, a: str, b: str, key: str) -> tuple[float, str]:
        """Two-sided p of "row a and row b score the same in column ``key``" and the test's name (:data:`TESTS`).

        Two-level t (paired over seeds when the rows share them, else Welch) when both rows have at least two
        seeds; with one seed the question can only be about this test set: the exact McNemar test for accuracy
        (per-example correctness; not a ratio-of-sums accuracy), else a z test on the test-set variance."""
        est = self.difference(a, b, key)
        if est is None:
            return math.nan, ""
        if est.test_only:
            if key.endswith("/accuracy") and not self.is_ratio(key):
                task = key.rsplit("/", 1)[0]
                (target, pa), (_, pb) = self.data[(a, task)], self.data[(b, task)]
                if len(pa) == 1 and len(pb) == 1:
                    return stats.mcnemar(pa[0] == target, pb[0] == target), MCNEMAR
            return est.p, Z_TEST
        return est.p, PAIRED_T if est.paired else WELCH_T


PAIRED_T = "paired t"
WELCH_T = "Welch t"
MCNEMAR = "McNemar (one seed)"
Z_TEST = "z (one seed)"
TESTS = {PAIRED_T: "two-level t over paired seeds (seed variance of the per-seed differences plus the test-set "
                   "covariance between seeds)",
         WELCH_T: "two-level Welch t (rows with other seeds: seed variances of both plus the test-set term)",
         MCNEMAR: "exact McNemar test on per-example correctness: one seed, so it is about this test set only",
         Z_TEST: "z test on the test-set variance: one seed, so it is about this test set only"}


# ----------------------------------------------------------------------------------------------- notes


def group_rows(items: Iterable[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """[(row, text)] -> [(rows, text)]: one note per distinct text, naming every row it concerns."""
    grouped: dict[str, list[str]] = {}
    for row, text in items:
        grouped.setdefault(text, []).append(row)
    return [(rows, text) for text, rows in grouped.items()]
