"""``regression``: one real score per example, a linear head to one output, mean squared error.

A missing target is NaN (a blank cell of a ``source: files`` column): the loss averages over labelled examples only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bench import metrics as M
from bench.errors import BenchError
from bench.tasks.base import Kept, TaskKind, register_task_kind


@register_task_kind("regression")
class Regression(TaskKind):
    """One score per example: linear head, MSE (a Gaussian likelihood); Pearson, Spearman, MSE."""

    metrics = {"pearson": "max", "spearman": "max", "mse": "min"}
    likelihood = "gaussian"

    def validate(self) -> None:
        if self.task.num_classes not in (None, 1):
            raise BenchError(f"task {self.task.name!r}: a regression task has no num_classes")

    def head(self, dim: int) -> nn.Module:
        return nn.Linear(dim, 1)

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return y.squeeze(-1)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # a masked sum over the labelled examples divided by their count: bit-for-bit F.mse_loss when all are
        # labelled, an exact 0 when none is
        target = target.float()
        mask = ~torch.isnan(target)
        sq = torch.where(mask, (output.float() - torch.nan_to_num(target)) ** 2, 0.0)
        return sq.sum() / mask.sum().clamp_min(1)

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        return ~torch.isnan(target.float())

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.float()

    def score(self, target: np.ndarray, pred: np.ndarray, fitted: dict[str, Any] | None = None,
              ) -> tuple[dict[str, float], Kept]:
        pred = pred.astype(np.float64)
        keep = np.flatnonzero(~np.isnan(target.astype(np.float64)))
        if len(keep) < len(target):
            target, pred = target[keep], pred[keep]
        return M.compute(self.metric_names, target, pred), {"pred": pred, "target": target,
                                                            "id": keep.astype(np.int64)}

    def check_targets(self, y: Any, where: str) -> None:
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.number) or np.isinf(y.astype(np.float64)).any():
            raise BenchError(f"{where}: task {self.task.name!r} has non-finite regression targets")

    def unlabel(self, y: Any, idx: np.ndarray) -> np.ndarray:
        out = np.array(y, dtype=np.float32)
        out[idx] = np.nan
        return out

    def from_column(self, values: Any, names: list[str] | None, where: str) -> np.ndarray:
        try:
            return np.asarray(values, dtype=np.float32)  # a blank cell reads as NaN: a missing target
        except ValueError:
            raise BenchError(f"{where}: regression task {self.task.name!r} is not numeric; fix the data or make the "
                             "task classification with label_names") from None
