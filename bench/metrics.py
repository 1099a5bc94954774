"""Task metrics by name, computed with scikit-learn and SciPy (GLUE conventions, docs/protocol.md).

Each metric takes ``(y_true, prediction)`` where prediction is class ids (classification) or scores (regression).
"""

from __future__ import annotations

import math
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


def _mean_ap(y: np.ndarray, scores: np.ndarray) -> float:
    """Multi-label mean average precision: scikit-learn's AP per label over its labelled examples (-1: missing),
    averaged over the labels with at least one positive (AP is undefined without one)."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    aps = []
    for j in range(y.shape[1]):
        keep = y[:, j] >= 0
        if (y[keep, j] == 1).any():
            aps.append(skm.average_precision_score(y[keep, j], scores[keep, j]))
    return float(np.mean(aps)) if aps else 0.0


METRICS: dict[str, tuple[Metric, str]] = {
    "accuracy": (lambda y, p: float(skm.accuracy_score(y, p)), "max"),
    "macro_f1": (lambda y, p: float(skm.f1_score(y, p, average="macro", zero_division=0)), "max"),
    "f1": (lambda y, p: float(skm.f1_score(y, p, pos_label=1, zero_division=0)), "max"),  # MRPC/QQP: positive = 1
    "mcc": (lambda y, p: float(skm.matthews_corrcoef(y, p)), "max"),  # CoLA
    "pearson": (_corr(stats.pearsonr), "max"),
    "spearman": (_corr(stats.spearmanr), "max"),
    "mse": (lambda y, p: float(np.mean((np.asarray(y, float) - p) ** 2)), "min"),
    "mae": (lambda y, p: float(np.mean(np.abs(np.asarray(y, float) - p))), "min"),
    "mean_ap": (_mean_ap, "max"),  # multi-label: y [n, L] of 1/0/-1, p [n, L] scores
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


def delta_m(values: dict, base: dict, metrics: list[tuple[str, str]], directions: dict,
            average: str = "task"):
    """Δm% (Maninis et al., 2019) of ``values`` against ``base``, both ``{(task, metric): value}`` with values that
    are numbers (seed means) or arrays (bootstrap replicates, element-wise).

    Δm = (100/T) Σ_t (1/M_t) Σ_m (−1)^{l_tm} (N_tm − B_tm) / |B_tm| over ``metrics``; tasks are those with a baseline
    value; a baseline of 0 (or a missing value) leaves its metric out; a task without any usable metric makes Δm% NaN.
    ``average="metric"`` weighs every metric equally instead, Δm = (100/S) Σ_s (−1)^{l_s} (N_s − B_s) / |B_s| over
    the S metrics: the convention of the published Nash-MTL and FAMO tables (bench/references/; their Δm% also has
    the opposite sign: positive = worse). Returns a float for numbers, an array for arrays."""
    if average not in ("task", "metric"):
        raise unknown("Δm% average", average, ("task", "metric"))
    per_task: dict[str, list[np.ndarray]] = {}
    for task, metric in metrics:
        if (task, metric) not in base:
            continue
        b = np.asarray(base[(task, metric)], dtype=float)
        v = np.asarray(values.get((task, metric), math.nan), dtype=float)
        sign = -1.0 if directions.get((task, metric)) == "min" else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where((b == 0) | np.isnan(b) | np.isnan(v), np.nan, sign * (v - b) / np.abs(b))
        per_task.setdefault(task, []).append(term)
    if not per_task:
        return math.nan
    if average == "metric":
        per_task = {"": [t for terms in per_task.values() for t in terms]}  # one pool: each metric weighs 1/S
    with np.errstate(invalid="ignore"), _quiet():
        tasks = [np.nanmean(np.stack(terms), axis=0) for terms in per_task.values()]
    out = 100.0 * np.mean(np.stack(tasks), axis=0)
    return float(out) if out.ndim == 0 else out


class _quiet:
    """Silence numpy's "mean of empty slice" warning (an all-NaN task term is NaN, as intended)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
