"""The images a dense suite's figure shows: the first test examples' inputs, ground-truth maps and each row's
predicted maps, read from the rows' stored ``predictions.npz`` (nothing is rerun).

A dense task kind keeps, per split, ``preview_target`` and ``preview_pred`` (its first K examples' maps) and the
evaluation loop adds ``preview_input`` (those examples' images, (K, C, H, W)). A row shows the predictions of its
lowest seed. A task is dense here when the files hold previews for it: no list of kind names, so a plug-in kind
that keeps previews is drawn too (:mod:`bench.report.plots.dense`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.record import Record
from bench.report.inference import row_infos
from bench.report.predictions import Predictions

MAX_IMAGES = 4  # image rows of the figure: the first examples of the split


@dataclass(frozen=True, eq=False)
class TaskPreview:
    """One dense task: the ground truth of the shown examples and, per row, its predictions or why there are none."""

    task: str
    target: np.ndarray  # (K, H, W) or (K, C, H, W)
    preds: dict[str, np.ndarray | str]  # row -> (K, ...) like target, or a one-line reason


@dataclass(frozen=True, eq=False)
class Previews:
    """What :func:`bench.report.plots.dense.dense_figure` draws: inputs, then per dense task its maps."""

    split: str
    inputs: np.ndarray | None  # (K, C, H, W) or (K, H, W): uint8, or float as the data stores them; None: not kept
    tasks: tuple[TaskPreview, ...]
    rows: tuple[str, ...]  # the rows, in the figure's column order
    seeds: dict[str, int]  # row -> the seed whose predictions are shown

    @property
    def images(self) -> int:
        return len(self.tasks[0].target)


def dense_previews(records: list[Record], rows: list[str], split: str = "test") -> Previews | None:
    """The previews of ``rows`` (leaderboard row names, in the order to draw) on ``split``; None when no row keeps
    previews of any task (a suite without dense tasks). The first row that keeps a task's previews fixes its
    examples; a row whose stored targets differ (other examples) gets a reason instead of its maps."""
    infos = row_infos(records)
    rows = [r for r in rows if r in infos and infos[r].entries]
    tasks = list(dict.fromkeys(t for record in records for t in record.tasks))
    loader = Predictions()
    try:
        per_task: list[TaskPreview] = []
        inputs = None
        for task in tasks:
            target = None
            preds: dict[str, np.ndarray | str] = {}
            for row in rows:
                entry = infos[row].entries[0]  # entries are sorted by seed: the lowest one
                arrays = loader.previews(entry, split, task)
                if isinstance(arrays, str) or "pred" not in arrays or "target" not in arrays:
                    preds[row] = arrays if isinstance(arrays, str) else f"seed {entry.seed} keeps no {task} previews"
                    continue
                k = min(MAX_IMAGES, len(arrays["target"]), len(arrays["pred"]))
                if target is None:
                    target = arrays["target"][:k]
                    if inputs is None and "input" in arrays:
                        inputs = arrays["input"][:k]
                if len(arrays["target"]) < len(target) or not _same(arrays["target"][:len(target)], target):
                    preds[row] = f"seed {entry.seed} previews other {task} examples"
                    continue
                preds[row] = arrays["pred"][:len(target)]
            if target is not None:
                per_task.append(TaskPreview(task, target, preds))
    finally:
        loader.close()
    if not per_task:
        return None
    k = min(len(p.target) for p in per_task)
    if inputs is not None:
        k = min(k, len(inputs))
    per_task = [TaskPreview(p.task, p.target[:k], {r: v if isinstance(v, str) else v[:k] for r, v in p.preds.items()})
                for p in per_task]
    inputs = None if inputs is None else inputs[:k]  # None: the figure starts with the ground truth
    return Previews(split, inputs, tuple(per_task), tuple(rows), {r: infos[r].entries[0].seed for r in rows})


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal maps, NaN (an invalid depth pixel) equal to NaN."""
    if a.shape != b.shape:
        return False
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(b.dtype, np.floating):
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))
