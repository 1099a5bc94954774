"""Task metrics by name, computed with scikit-learn and SciPy (GLUE conventions, docs/protocol.md).

Each metric takes ``(y_true, prediction)`` where prediction is class ids (classification) or scores (regression).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from bench.errors import unknown

Metric = Callable[[np.ndarray, np.ndarray], float]


def _corr(fn):
    def metric(y, p):
        if np.std(y) == 0 or np.std(p) == 0:  # a constant prediction has no defined correlation; score it 0
            return 0.0
        return float(fn(y, p)[0])

    return metric


METRICS: dict[str, tuple[Metric, str]] = {
    "accuracy": (lambda y, p: float(skm.accuracy_score(y, p)), "max"),
    "macro_f1": (lambda y, p: float(skm.f1_score(y, p, average="macro", zero_division=0)), "max"),
    "f1": (lambda y, p: float(skm.f1_score(y, p, pos_label=1, zero_division=0)), "max"),  # MRPC/QQP: positive = 1
    "mcc": (lambda y, p: float(skm.matthews_corrcoef(y, p)), "max"),  # CoLA
    "pearson": (_corr(stats.pearsonr), "max"),
    "spearman": (_corr(stats.spearmanr), "max"),
    "mse": (lambda y, p: float(np.mean((np.asarray(y, float) - p) ** 2)), "min"),
    "mae": (lambda y, p: float(np.mean(np.abs(np.asarray(y, float) - p))), "min"),
}


def direction(name: str) -> str:
    """'max' when higher is better, 'min' otherwise."""
    if name not in METRICS:
        raise unknown("metric", name, METRICS)
    return METRICS[name][1]


def compute(names: list[str], y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    out = {}
    for n in names:
        if n not in METRICS:
            raise unknown("metric", n, METRICS)
        out[n] = METRICS[n][0](y_true, pred)
    return out
