"""Metrics over bootstrap replicates, vectorised over the replicate axis.

:func:`metric_matrix` scores every replicate of one row on one task at once: ``out[b] = metric(target[idx[b]],
pred[idx[b]])``. The metrics of :data:`VECTORISED` are computed with numpy over the replicate axis and agree with
:func:`bench.metrics.compute` on every replicate (``tests/test_stats.py``); any other metric is computed replicate by
replicate. The confusion-matrix helpers are shared with :mod:`bench.twolevel`'s jackknife.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sst

from bench import metrics as bench_metrics
from bench.stats.ranking import mean_ap_replicates
from bench.stats.ratios import Ratios

# Gathering target[idx] for all replicates at once costs B * n elements per array; bound it so a large test set
# (n ~ 1e5) with B = 2000 does not need gigabytes.
_CHUNK_ELEMENTS = 1 << 22

_CLASSIFICATION = ("accuracy", "macro_f1", "f1", "mcc")
_CORRELATION = ("pearson", "spearman")
_ERROR = ("mse", "mae")
_RANKING = ("mean_ap",)  # multi-label: target [n, L] of 1/0/-1, pred [n, L] scores (bench.stats.ranking)
VECTORISED = _CLASSIFICATION + _CORRELATION + _ERROR + _RANKING


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (sklearn's zero_division=0)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _confusion(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Confusion counts [b, true, pred] of label-coded replicate arrays t, p of shape [b, n]."""
    b = t.shape[0]
    codes = np.arange(b)[:, None] * (k * k) + t * k + p
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k).astype(float)


def _macro_f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_sum, pred_sum = cm.sum(axis=2), cm.sum(axis=1)
    # sklearn averages over the labels present in y_true or y_pred of this replicate, not over all classes
    present = (true_sum + pred_sum) > 0
    f1 = _safe_div(2 * tp, true_sum + pred_sum)
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def _mcc(cm: np.ndarray) -> np.ndarray:
    # multiclass MCC (Gorodkin), as in sklearn.metrics.matthews_corrcoef, which is 0 when a denominator term is 0
    t_sum, p_sum = cm.sum(axis=2), cm.sum(axis=1)
    correct = np.trace(cm, axis1=1, axis2=2)
    s = cm.sum(axis=(1, 2))
    cov_tp = correct * s - (t_sum * p_sum).sum(axis=1)
    cov_pp = s**2 - (p_sum**2).sum(axis=1)
    cov_tt = s**2 - (t_sum**2).sum(axis=1)
    return _safe_div(cov_tp, np.sqrt(cov_tt * cov_pp))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # bench.metrics scores a constant target or prediction 0; test constancy exactly (min == max) rather than by a
    # centred sum, which float rounding can leave a hair above zero
    constant = (x.min(axis=1) == x.max(axis=1)) | (y.min(axis=1) == y.max(axis=1))
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    xc /= np.where(constant, 1.0, np.linalg.norm(xc, axis=1))[:, None]
    yc /= np.where(constant, 1.0, np.linalg.norm(yc, axis=1))[:, None]
    r = np.clip((xc * yc).sum(axis=1), -1.0, 1.0)
    return np.where(constant, 0.0, r)


def _vectorised(name: str, t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Metric ``name`` of each row of the replicate arrays t, p [b, n] (labels coded 0..k-1 for classification)."""
    if name == "accuracy":
        return (t == p).mean(axis=1)
    if name == "macro_f1":
        return _macro_f1(_confusion(t, p, k))
    if name == "mcc":
        return _mcc(_confusion(t, p, k))
    if name == "f1":  # t, p are the raw labels here, a subset of {0, 1}
        tp = ((t == 1) & (p == 1)).sum(axis=1)
        return _safe_div(2 * tp, (t == 1).sum(axis=1) + (p == 1).sum(axis=1))
    if name == "pearson":
        return _pearson(t, p)
    if name == "spearman":
        return _pearson(sst.rankdata(t, axis=1), sst.rankdata(p, axis=1))
    if name == "mse":
        return np.mean((t - p) ** 2, axis=1)
    if name == "mae":
        return np.mean(np.abs(t - p), axis=1)
    raise AssertionError(name)


def metric_matrix(name: str | Ratios, target: np.ndarray | None, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Metric ``name`` on each bootstrap replicate: ``out[b] = metric(target[idx[b]], pred[idx[b]])``.

    ``idx`` is an int array [B, n] of example indices. The metrics in :data:`VECTORISED` are computed with numpy over
    the replicate axis; any other name of :data:`bench.metrics.METRICS` is computed replicate by replicate. A
    ratio-of-sums metric (:class:`~bench.stats.ratios.Ratios`) reads per-example stats [n, k] in place of ``pred``
    (``target`` is not used) and sums them per replicate.

    >>> idx = np.array([[0, 1, 2, 3], [2, 2, 2, 0]])
    >>> metric_matrix("accuracy", np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), idx)
    array([0.75, 0.25])
    """
    if isinstance(name, Ratios):
        return name.replicates(pred, idx)
    if name == "mean_ap":
        return mean_ap_replicates(target, pred, idx)
    target, pred, idx = np.asarray(target), np.asarray(pred), np.asarray(idx)
    if target.ndim != 1 or pred.shape != target.shape:
        raise ValueError(f"target and pred must be 1-D of the same length, got {target.shape} and {pred.shape}")
    if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"idx must be an int array [B, n], got {idx.dtype} {idx.shape}")
    k = 0
    if name in ("macro_f1", "mcc"):
        # code labels 0..k-1 so that bincount works for any label values; absent labels contribute nothing
        classes, codes = np.unique(np.concatenate([target, pred]), return_inverse=True)
        k = len(classes)
        target, pred = codes[: len(target)], codes[len(target) :]
    elif name in _CORRELATION + _ERROR:
        target, pred = target.astype(float), pred.astype(float)
    binary = name != "f1" or bool(np.isin(target, (0, 1)).all() and np.isin(pred, (0, 1)).all())
    if name not in VECTORISED or not binary:
        # not vectorised, or f1 on labels other than {0, 1}, where sklearn decides (and may refuse)
        return np.array([bench_metrics.compute([name], target[row], pred[row])[name] for row in idx], dtype=float)
    out = np.empty(idx.shape[0])
    step = max(1, _CHUNK_ELEMENTS // max(1, idx.shape[1]))
    for start in range(0, idx.shape[0], step):
        rows = idx[start : start + step]
        out[start : start + step] = _vectorised(name, target[rows], pred[rows], k)
    return out
