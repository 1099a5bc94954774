"""A leaderboard row's per-example arrays from its seeds' ``predictions.npz``: ids, targets, predictions and, for
tasks with ratio-of-sums metrics, the per-example stats, every seed aligned to the first seed's example ids.

:class:`bench.report.inference.Inference` reads them through :class:`Predictions`; a row whose files are missing,
damaged or disagree gets a one-line reason instead, which the board prints as a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.record import Record, Row

OLD_RECORDS = "no per-example predictions (records older than schema 2)"


@dataclass
class Entry:
    """One seed of one leaderboard row: the record and its row."""

    seed: int
    record: Record
    row: Row


@dataclass(frozen=True)
class BoardTask:
    """A column group of the table: a task of the board's split, or a task of an extra split (``test_mismatched``)."""

    name: str  # the column prefix: "mnli" or "mnli_mismatched"
    task: str  # the record's task name
    split: str  # the record's split
    spec: dict
    extra: bool = False  # extra splits are shown and tested but do not enter Avg and Δm%

    @property
    def has_stats(self) -> bool:
        """Whether the task's metrics include ratio-of-sums ones, computed from stored per-example stats."""
        return bool(self.spec.get("stats")) and bool(self.spec.get("recipes"))


@dataclass(frozen=True, eq=False)
class RowArrays:
    """A row's arrays on one board task, seeds stacked in the row's seed order and aligned to the first seed's ids:
    ``ids`` [n], ``target`` [n, ...], ``preds`` [n_seeds, n, ...], ``stats`` [n_seeds, n, k] or None."""

    ids: np.ndarray
    target: np.ndarray
    preds: np.ndarray
    stats: np.ndarray | None


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

    def _open(self, e: Entry, split: str, task: str) -> tuple[Path, object] | str:
        """The loaded ``predictions.npz`` that seed ``e`` keeps ``split``/``task`` in (and its path), or why none."""
        rel = (e.row.predictions or {}).get(split, {}).get(task)
        if not rel:
            return f"seed {e.seed} has no {split} predictions for {task}"
        if e.record.path is None:
            return "record has no path to resolve its predictions from"
        path = e.record.path.parents[3] / rel  # <results>/<suite>/cells/<strategy>/<cell>/record.json
        data = self._file(path)
        return data if isinstance(data, str) else (path, data)

    def previews(self, e: Entry, split: str, task: str) -> dict[str, np.ndarray] | str:
        """The ``preview_*`` arrays seed ``e`` keeps of ``split``/``task`` (``input``, ``target``, ``pred``: the
        first examples' images and maps of a dense task, for the report's figure), keyed without the prefix; empty
        for a task that keeps none, a one-line reason when the file cannot be read."""
        if e.record.legacy:
            return OLD_RECORDS
        opened = self._open(e, split, task)
        if isinstance(opened, str):
            return opened
        _, data = opened
        prefix = f"{split}/{task}/preview_"
        return {k[len(prefix):]: np.asarray(data[k]) for k in data.files if k.startswith(prefix)}

    def row_arrays(self, entries: Sequence[Entry], bt: BoardTask) -> RowArrays | str:
        """The arrays of a row (its seeds' ``entries``, sorted by seed) on one board task, or why there are none."""
        if all(e.record.legacy for e in entries):
            return OLD_RECORDS
        names = ("id", "target", "pred", "stats") if bt.has_stats else ("id", "target", "pred")
        first: list[np.ndarray] | None = None
        per_seed: list[list[np.ndarray]] = []
        for e in entries:
            if e.record.legacy:
                return f"seed {e.seed}: {OLD_RECORDS}"
            opened = self._open(e, bt.split, bt.task)
            if isinstance(opened, str):
                return opened
            path, data = opened
            keys = [f"{bt.split}/{bt.task}/{k}" for k in names]
            missing = [k for k in keys if k not in data.files]
            if missing:
                return f"{path} lacks {', '.join(missing)}"
            arrays = [np.asarray(data[k]) for k in keys]
            if len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
                return f"{path}: {bt.split}/{bt.task} arrays are empty or of different lengths"
            if bt.has_stats and (arrays[3].ndim != 2 or arrays[3].shape[1] != len(bt.spec["stats"])):
                return (f"{path}: {bt.split}/{bt.task}/stats has shape {arrays[3].shape}, not [n, "
                        f"{len(bt.spec['stats'])}] for the stats {', '.join(bt.spec['stats'])}")
            if first is None:
                first = arrays
            else:
                order = align(arrays[0], first[0])
                if order is None:
                    return f"seed {e.seed} was evaluated on other {bt.task} examples than seed {entries[0].seed}"
                arrays = [a[order] for a in arrays]
                if not np.array_equal(arrays[1], first[1]):
                    return f"seed {e.seed} has other {bt.task} targets than seed {entries[0].seed}"
            per_seed.append(arrays)
        stats = np.stack([a[3] for a in per_seed]).astype(float) if bt.has_stats else None
        return RowArrays(first[0], first[1], np.stack([a[2] for a in per_seed]), stats)


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
