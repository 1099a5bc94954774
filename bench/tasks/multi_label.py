"""``multi_label``: L binary labels per example (CelebA's attributes, which digits a mosaic shows), one sigmoid each.

The head is linear to L logits and the loss is binary cross-entropy averaged over the labelled (example, label)
entries: a label of -1 is missing (partial labels at label granularity). Predictions are probabilities; a label is
predicted present above one threshold chosen on the validation split (the one of 0.05, 0.10, ..., 0.95 with the best
micro-F1 there) and applied unchanged to test. Metrics: micro-F1 (pooled over labels), macro-F1 (the mean over the
labels that occur in the gold or the predicted labels of the examples scored, as ``macro_f1`` of classification
averages over the classes present), and mean average precision (scikit-learn's, the mean over labels with a positive).
Per-label F1 (``f1@<label>``) goes to the CSV and JSON boards.

``predictions.npz`` keeps per example the labels (``target``, L entries), the probabilities (``pred``) and the
counts at the threshold (``stats``: tp, fp, fn per label), so that the F1s of any resample are ratios of sums and
mAP is recomputed from the kept probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench import metrics as M
from bench.errors import BenchError
from bench.stats.ratios import Ratios
from bench.tasks.base import Kept, TaskKind, register_task_kind

THRESHOLDS = np.round(np.arange(1, 20) * 0.05, 2)
DEFAULT_THRESHOLD = 0.5  # when no validation split was scored first


@register_task_kind("multi_label")
class MultiLabel(TaskKind):
    """L binary labels per example: sigmoid per label, BCE; micro/macro-F1 at a validation-chosen threshold, mAP."""

    metrics = {"micro_f1": "max", "macro_f1": "max", "mean_ap": "max"}
    likelihood = "bernoulli"
    unit = "label"

    @property
    def labels(self) -> list[str]:
        return list(self.task.classes or [f"label_{i}" for i in range(int(self.task.num_classes or 0))])

    def validate(self) -> None:
        if len(self.labels) < 1:
            raise BenchError(f"task {self.task.name!r}: a multi_label task needs num_classes (its number of labels) "
                             "or classes: [label names]")

    def direction(self, metric: str) -> str:
        return "max"

    def extra_metrics(self) -> list[str]:
        return [f"f1@{label}" for label in self.labels]

    def _columns(self) -> list[str]:
        return [f"{c}@{label}" for label in self.labels for c in ("tp", "fp", "fn")]

    def _recipes(self) -> dict[str, dict[str, Any]]:
        """Every F1 as a ratio of the per-label counts: micro pools them, macro averages the labels that occur
        (a positive denominator), f1@label is one label's."""
        f1 = [{"num": {f"tp@{x}": 2}, "den": {f"tp@{x}": 2, f"fp@{x}": 1, f"fn@{x}": 1}} for x in self.labels]
        micro = {"num": {k: v for r in f1 for k, v in r["num"].items()},
                 "den": {k: v for r in f1 for k, v in r["den"].items()}}
        recipes = {"micro_f1": {"ratios": [micro], "bounds": [0, 1]}, "macro_f1": {"ratios": f1, "bounds": [0, 1]}}
        return recipes | {f"f1@{x}": {"ratios": [r], "bounds": [0, 1]} for x, r in zip(self.labels, f1)}

    def record_spec(self) -> dict[str, Any]:
        return {"stats": self._columns(), "recipes": {m: r for m, r in self._recipes().items()
                                                      if m in self.metric_names or m.startswith("f1@")}}

    # -- the model ---------------------------------------------------------------------------------------------
    def head(self, dim: int) -> nn.Module:
        return nn.Linear(dim, len(self.labels))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = target >= 0
        bce = F.binary_cross_entropy_with_logits(output.float(), target.clamp_min(0).float(), reduction="none")
        return torch.where(mask, bce, 0.0).sum() / mask.sum().clamp_min(1)

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        return (target >= 0).any(-1)

    def entropy(self, output: torch.Tensor) -> torch.Tensor:
        logp, log1mp = F.logsigmoid(output.float()), F.logsigmoid(-output.float())
        return -(logp.exp() * logp + log1mp.exp() * log1mp).sum(-1).mean()

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output.float())

    # -- evaluation --------------------------------------------------------------------------------------------
    def calibrate(self, target: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
        micro = Ratios.parse("micro_f1", self._recipes()["micro_f1"], self._columns())
        scores = [micro.value(counts(target, pred, t).reshape(len(target), -1)) for t in THRESHOLDS]
        return {"threshold": float(THRESHOLDS[int(np.argmax(scores))])}

    def score(self, target: np.ndarray, pred: np.ndarray, fitted: dict[str, Any] | None = None,
              ) -> tuple[dict[str, float], Kept]:
        threshold = (fitted or {}).get("threshold", DEFAULT_THRESHOLD)
        stats = counts(target, pred, threshold).reshape(len(target), -1)
        values = self.ratio_values(stats)
        if "mean_ap" in self.metric_names:  # a ranking metric, not a ratio: from the kept probabilities
            values["mean_ap"] = M.compute(["mean_ap"], target, pred)["mean_ap"]
        metrics = {m: values[m] for m in [*self.metric_names, *self.extra_metrics()]}
        return metrics, {"id": np.arange(len(target), dtype=np.int64), "target": target.astype(np.int8),
                         "pred": pred.astype(np.float32), "stats": stats,
                         "threshold": np.array([threshold])}

    # -- data --------------------------------------------------------------------------------------------------
    def check_targets(self, y: Any, where: str) -> None:
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] != len(self.labels):
            raise BenchError(f"{where}: task {self.task.name!r} has targets of shape {y.shape}; a multi_label task "
                             f"needs (examples, {len(self.labels)}) of 1/0 (-1: missing)")
        bad = y[~np.isin(y, (-1, 0, 1))]
        if bad.size:
            raise BenchError(f"{where}: task {self.task.name!r} has label value {bad[0]!r}; use 1, 0 or -1 (missing)")

    def unlabel(self, y: Any, idx: np.ndarray) -> np.ndarray:
        out = np.array(y, dtype=np.int8)
        out[idx] = -1
        return out

    def from_column(self, values: Any, names: list[str] | None, where: str) -> np.ndarray:
        """A cell lists the labels present (a JSONL list, or names separated by ``|``); a blank cell is missing."""
        import pandas as pd

        ids = {n: i for i, n in enumerate(names or self.labels)}
        out = np.zeros((len(values), len(ids)), dtype=np.int8)
        for i, cell in enumerate(values):
            if not isinstance(cell, (list, tuple, np.ndarray)) and pd.isna(cell):
                out[i] = -1
                continue
            present = [str(v) for v in cell] if isinstance(cell, (list, tuple, np.ndarray)) else \
                [v for v in str(cell).split("|") if v]
            bad = [v for v in present if v not in ids]
            if bad:
                raise BenchError(f"{where}: label {bad[0]!r} (row {i}) is not one of task {self.task.name!r}'s "
                                 "classes; add it to classes: or fix the row")
            out[i, [ids[v] for v in present]] = 1
        return out


def counts(target: np.ndarray, pred: np.ndarray, threshold: float) -> np.ndarray:
    """Per example and label [n, L, 3]: tp, fp, fn at ``threshold`` (a missing label, -1, counts nowhere)."""
    labelled, yes, guess = target >= 0, target == 1, pred > threshold
    return np.stack([labelled & yes & guess, labelled & ~yes & guess, labelled & yes & ~guess], axis=-1).astype(float)

