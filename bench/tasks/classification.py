"""``classification``: one of K classes per example, a linear head on the pooled features, cross-entropy.

A missing label is -1 (a blank cell of a ``source: files`` column): the loss averages over labelled examples only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench import metrics as M
from bench.errors import BenchError
from bench.tasks.base import Kept, TaskKind, register_task_kind

MISSING = -1


def labelled_ids(y: np.ndarray, where: str, task: str, k: int) -> None:
    """Refuse labels that are not class ids 0..k-1 (or -1, missing)."""
    if not np.issubdtype(y.dtype, np.integer):
        raise BenchError(f"{where}: task {task!r} is classification but its labels are {y.dtype}; "
                         "map labels to integer class ids 0..K-1 in the source")
    bad = y[((y < 0) & (y != MISSING)) | (y >= k)]
    if bad.size:
        raise BenchError(f"{where}: label {int(bad[0])} is outside the declared classes 0..{k - 1}"
                         f" of task {task!r}; fix num_classes in the suite or the label in the data")


def class_ids(values: Any, names: list[str] | None, where: str, task: str) -> np.ndarray:
    """Class ids of a table column: integers as they are, strings through ``names``; a blank cell is -1."""
    import pandas as pd

    missing = np.asarray(pd.isna(values))
    present = values[~missing]
    out = np.full(len(values), MISSING, dtype=np.int64)
    if names is not None and not pd.api.types.is_integer_dtype(present):
        ids = {n: i for i, n in enumerate(names)}
        strs = [str(v) for v in present]
        bad = [v for v in strs if v not in ids]
        if bad:
            raise BenchError(f"{where}: label {bad[0]!r} is not a declared class of task {task!r} "
                             f"({', '.join(names)}); add it to label_names or fix the row")
        out[~missing] = [ids[v] for v in strs]
        return out
    if pd.api.types.is_integer_dtype(present) or (pd.api.types.is_float_dtype(present)
                                                  and np.all(np.mod(present, 1) == 0)):
        out[~missing] = np.asarray(present, dtype=np.int64)
        return out
    raise BenchError(f"{where}: the column holds {values.dtype} labels, not class ids; "
                     f"declare label_names: [...] for task {task!r}")


@register_task_kind("classification")
class Classification(TaskKind):
    """K classes per example: linear head on pooled features, cross-entropy; accuracy and macro-F1."""

    metrics = {"accuracy": "max", "macro_f1": "max"}
    likelihood = "categorical"

    def validate(self) -> None:
        if self.task.num_classes is None or self.task.num_classes < 2:
            raise BenchError(f"task {self.task.name!r}: a classification task needs num_classes >= 2")

    def direction(self, metric: str) -> str:
        return M.direction(metric)  # any classification metric of bench.metrics (f1, mcc, ...)

    def head(self, dim: int) -> nn.Module:
        return nn.Linear(dim, int(self.task.num_classes or 0))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # a sum over labelled examples divided by their count: bit-for-bit the mean cross-entropy when all are
        # labelled, and an exact 0 (not NaN) when none is
        count = (target != MISSING).sum().clamp_min(1)
        return F.cross_entropy(output.float(), target, ignore_index=MISSING, reduction="sum") / count

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        return target != MISSING

    def entropy(self, output: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(output.float(), dim=-1)
        return -(logp.exp() * logp).sum(-1).mean()

    def sample(self, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.multinomial(F.softmax(output.detach().float(), -1), 1, generator=generator).squeeze(-1)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(-1)

    def score(self, target: np.ndarray, pred: np.ndarray, fitted: dict[str, Any] | None = None,
              ) -> tuple[dict[str, float], Kept]:
        pred = pred.astype(np.int64)
        keep = np.flatnonzero(target != MISSING)
        if len(keep) < len(target):  # partial labels: score (and keep) the labelled examples only
            target, pred = target[keep], pred[keep]
        return M.compute(self.metric_names, target, pred), {"pred": pred, "target": target,
                                                            "id": keep.astype(np.int64)}

    def check_targets(self, y: Any, where: str) -> None:
        labelled_ids(np.asarray(y), where, self.task.name, int(self.task.num_classes or 0))

    def unlabel(self, y: Any, idx: np.ndarray) -> np.ndarray:
        out = np.array(y, dtype=np.int64)
        out[idx] = MISSING
        return out

    def stratify(self, y: Any) -> np.ndarray:
        return np.asarray(y)

    def from_column(self, values: Any, names: list[str] | None, where: str) -> np.ndarray:
        return class_ids(values, names, where, self.task.name)
