"""Intervals, paired tests and winner marks of one leaderboard, from the rows' per-example predictions.

The numbers come from :mod:`bench.stats` (docs/statistics.md explains the protocol); this module decides *what* is
compared with what:

* **rows and seeds**: a row is one configuration (:func:`bench.report.records.assign_names`); its seeds are sorted,
  and a row's ``i``-th seed is paired with the ``i``-th seed of any row with the same number of seeds;
* **draws**: one :class:`bench.stats.Draws` per seed count, all with the same resampled examples (``draw`` keys the
  example streams by seed and task only), so every row of a table is scored on the same replicates;
* **examples**: per task, the first row that has predictions fixes the example ids; other rows are aligned to them
  by id, and a row whose ids or targets differ gets no interval for that task (a note says so);
* **replicates** are in the table's units (points: ``max`` metrics ×100, ``min`` metrics raw), as are intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import stats
from bench.metrics import delta_m
from bench.record import Record, Row
from bench.report.records import (
    BUDGET_FIELDS,
    budget_fingerprint,
    config_of,
    data_fingerprint,
    is_baseline_row,
    row_name,
    row_origin,
)

OLD_RECORDS = "no per-example predictions (records older than schema 2)"


def scale(direction: str) -> float:
    """Reported units: fractions (``max`` metrics) ×100, raw ``min`` metrics (mse) unchanged."""
    return 100.0 if direction == "max" else 1.0


# ----------------------------------------------------------------------------------------------- rows


@dataclass
class Entry:
    """One seed of one leaderboard row: the record and its row."""

    seed: int
    record: Record
    row: Row


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
        return all(e.record.schema_version < 2 for e in self.entries)


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
    """Mean over seeds of the row's ``budget`` fields (NaN when no record of the row has them)."""
    out = {}
    for key in BUDGET_FIELDS:
        values = [float(e.row.budget[key]) for e in info.entries
                  if e.row.budget and isinstance(e.row.budget.get(key), (int, float))]
        out[key] = float(np.mean(values)) if values else math.nan
    return out


# ----------------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class BoardTask:
    """A column group of the table: a task of the board's split, or a task of an extra split (``test_mismatched``)."""

    name: str  # the column prefix: "mnli" or "mnli_mismatched"
    task: str  # the record's task name
    split: str  # the record's split
    spec: dict
    extra: bool = False  # extra splits are shown and tested but do not enter Avg and Δm%


class Predictions:
    """Loads ``predictions.npz`` files once (rows share evaluate stages) and aligns rows to reference ids."""

    def __init__(self) -> None:
        self._files: dict[Path, object] = {}

    def _file(self, path: Path):
        if path not in self._files:
            try:
                self._files[path] = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                self._files[path] = f"predictions file {path} is missing"
            except (OSError, ValueError) as exc:
                self._files[path] = f"unreadable predictions file {path} ({type(exc).__name__})"
        return self._files[path]

    def close(self) -> None:
        for data in self._files.values():
            if hasattr(data, "close"):
                data.close()
        self._files.clear()

    def row_arrays(self, info: RowInfo, bt: BoardTask) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
        """(ids [n], target [n], preds [n_seeds, n]) of a row on one board task, or why there are none."""
        if info.schema_1:
            return OLD_RECORDS
        ids = target = None
        preds = []
        for e in info.entries:
            if e.record.schema_version < 2:
                return f"seed {e.seed}: {OLD_RECORDS}"
            rel = (e.row.predictions or {}).get(bt.split, {}).get(bt.task)
            if not rel:
                return f"seed {e.seed} has no {bt.split} predictions for {bt.task}"
            if e.record.path is None:
                return "record has no path to resolve its predictions from"
            path = e.record.path.parents[3] / rel  # <results>/<suite>/cells/<strategy>/<cell>/record.json
            data = self._file(path)
            if isinstance(data, str):
                return data
            keys = [f"{bt.split}/{bt.task}/{k}" for k in ("id", "target", "pred")]
            missing = [k for k in keys if k not in data.files]
            if missing:
                return f"{path} lacks {', '.join(missing)}"
            seed_ids, seed_target, seed_pred = (np.asarray(data[k]) for k in keys)
            if not (len(seed_ids) == len(seed_target) == len(seed_pred)) or len(seed_ids) == 0:
                return f"{path}: {bt.split}/{bt.task} arrays are empty or of different lengths"
            if ids is None:
                ids, target = seed_ids, seed_target
            else:
                order = align(seed_ids, ids)
                if order is None:
                    return f"seed {e.seed} was evaluated on other {bt.task} examples than seed {info.seeds[0]}"
                seed_pred, seed_target = seed_pred[order], seed_target[order]
                if not np.array_equal(seed_target, target):
                    return f"seed {e.seed} has other {bt.task} targets than seed {info.seeds[0]}"
            preds.append(seed_pred)
        return ids, target, np.stack(preds)


def align(ids: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """Indices ``order`` with ``ids[order] == reference``, or None when the two are not the same set of examples."""
    if len(ids) != len(reference):
        return None
    if np.array_equal(ids, reference):
        return np.arange(len(ids))
    sorter = np.argsort(ids, kind="stable")
    pos = np.clip(np.searchsorted(ids, reference, sorter=sorter), 0, len(ids) - 1)
    order = sorter[pos]
    return order if np.array_equal(ids[order], reference) and len(np.unique(order)) == len(order) else None


# ----------------------------------------------------------------------------------------------- replicates


class Inference:
    """Replicates of every (row, column) of one board, computed on demand from one shared set of draws.

    Columns are ``"<board task>/<metric>"``, ``"avg"`` and ``"delta_m"`` (the keys of the leaderboard table).
    """

    def __init__(self, infos: dict[str, RowInfo], board_tasks: dict[str, BoardTask], order: list[str],
                 avg_tasks: list[str] | None, delta_metrics: list[tuple[str, str]], baselines: dict[str, str | None],
                 B: int, level: float, seed: int = 0) -> None:
        self.infos, self.board_tasks, self.B, self.level, self.seed = infos, board_tasks, B, level, seed
        self.avg_tasks, self.delta_metrics, self.baselines = avg_tasks, delta_metrics, baselines
        self.reasons: dict[str, dict[str, str]] = {}  # row -> board task -> why it has no replicates
        self.data: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # (row, task) -> target, preds
        loader = Predictions()
        self.references: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}  # task -> (row, ids, target)
        for name in order:  # the table's order: the first row with predictions fixes a task's examples
            for bt in board_tasks.values():
                arrays = loader.row_arrays(infos[name], bt)
                if isinstance(arrays, str):
                    self.reasons.setdefault(name, {})[bt.name] = arrays
                    continue
                ids, target, preds = arrays
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
        loader.close()
        self.n_examples = {task: len(ref[1]) for task, ref in self.references.items()}
        self._draws: dict[int, stats.Draws] = {}
        self._reps: dict[tuple[str, str], np.ndarray | None] = {}

    # -- draws and replicates

    def draws(self, n_seeds: int) -> stats.Draws:
        """The table's draws for a row with ``n_seeds`` seeds: the same examples for every seed count."""
        if n_seeds not in self._draws:
            self._draws[n_seeds] = stats.draw(self.n_examples, n_seeds, self.B, self.seed)
        return self._draws[n_seeds]

    def has(self, row: str, task: str) -> bool:
        return (row, task) in self.data

    def any(self) -> bool:
        return bool(self.data)

    def replicates(self, row: str, key: str) -> np.ndarray | None:
        """``[B]`` replicates of ``row`` in column ``key`` (table units), or None when they cannot be computed."""
        if (row, key) not in self._reps:
            self._reps[(row, key)] = self._compute(row, key)
        return self._reps[(row, key)]

    def _compute(self, row: str, key: str) -> np.ndarray | None:
        if key == "avg":
            if not self.avg_tasks:
                return None
            parts = [self.replicates(row, f"{t}/{self.board_tasks[t].spec['primary']}") for t in self.avg_tasks]
            return None if any(p is None for p in parts) else np.mean(np.stack(parts), axis=0)
        if key == "delta_m":
            base = self.baselines.get(row)
            return None if base is None else self.delta_m(row, base)
        task, metric = key.rsplit("/", 1)
        if (row, task) not in self.data or metric not in self.board_tasks[task].spec["metrics"]:
            return None
        target, preds = self.data[(row, task)]
        factor = scale(self.board_tasks[task].spec["metrics"][metric])
        return stats.replicate_scores(metric, target, preds, self.draws(len(preds)), task) * factor

    def delta_m(self, row: str, base: str) -> np.ndarray | None:
        """Δm% of ``row`` against ``base`` on every replicate (:func:`delta_m` on the replicate arrays)."""
        if row == base:
            ok = all(self.replicates(row, f"{t}/{m}") is not None for t, m in self.delta_metrics)
            return np.zeros(self.B) if ok else None
        values, bases = {}, {}
        for task, metric in self.delta_metrics:
            n, b = self.replicates(row, f"{task}/{metric}"), self.replicates(base, f"{task}/{metric}")
            if n is None or b is None:
                return None
            values[(task, metric)], bases[(task, metric)] = n, b
        if not bases:
            return None
        directions = {(t, m): self.board_tasks[t].spec["metrics"][m] for t, m in self.delta_metrics}
        return delta_m(values, bases, self.delta_metrics, directions)

    def interval(self, row: str, key: str) -> tuple[float, float]:
        reps = self.replicates(row, key)
        return (math.nan, math.nan) if reps is None else stats.interval(reps, self.level)

    def wilson(self, row: str, task: str) -> tuple[float, float]:
        """Wilson interval of accuracy (×100) pooled over the row's seeds: k correct of n_seeds × n predictions."""
        if (row, task) not in self.data:
            return math.nan, math.nan
        target, preds = self.data[(row, task)]
        lo, hi = stats.wilson(int((preds == target[None, :]).sum()), int(preds.size), self.level)
        return 100.0 * lo, 100.0 * hi

    # -- tests

    def paired_test(self, a: str, b: str, key: str) -> tuple[float, str]:
        """Two-sided p of "row a and row b score the same in column ``key``" and the test's name.

        Exact McNemar on per-example correctness for accuracy when both rows have a single seed; otherwise the
        paired bootstrap p of the difference's replicates (Δm%: of ``a``'s Δm% against ``b``'s)."""
        if key.endswith("/accuracy"):
            task = key.rsplit("/", 1)[0]
            if self.has(a, task) and self.has(b, task):
                (target, pa), (_, pb) = self.data[(a, task)], self.data[(b, task)]
                if len(pa) == 1 and len(pb) == 1:
                    return stats.mcnemar(pa[0] == target, pb[0] == target), "McNemar"
        diff = self.difference(a, b, key)
        return (math.nan, "") if diff is None else (stats.paired_bootstrap_p(diff), "bootstrap")

    def difference(self, a: str, b: str, key: str) -> np.ndarray | None:
        """Replicates of ``a − b`` in column ``key``."""
        ra, rb = self.replicates(a, key), self.replicates(b, key)
        return None if ra is None or rb is None else ra - rb


# ----------------------------------------------------------------------------------------------- notes


def group_rows(items: Iterable[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """[(row, text)] -> [(rows, text)]: one note per distinct text, naming every row it concerns."""
    grouped: dict[str, list[str]] = {}
    for row, text in items:
        grouped.setdefault(text, []).append(row)
    return [(rows, text) for text, rows in grouped.items()]
