"""Multiple-comparison corrections of the p-values of one table: Holm–Bonferroni, Benjamini–Hochberg or none."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import stats as sst

from bench.errors import unknown

CORRECTIONS = {"holm": "Holm–Bonferroni", "bh": "Benjamini–Hochberg", "none": "no correction"}


def _finite(pvalues: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(list(pvalues) if not isinstance(pvalues, np.ndarray) else pvalues, dtype=float).ravel()
    return p, ~np.isnan(p)


def holm(pvalues: Iterable[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN and do not count as tests).

    >>> holm([0.01, 0.04, 0.03, 0.005]).round(6).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p, ok = _finite(pvalues)
    out = np.full(p.shape, np.nan)
    q = p[ok]
    m = q.size
    order = np.argsort(q, kind="stable")
    # step-down: the i-th smallest is multiplied by (m - i); the running max keeps adjusted values in p order
    stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
    adj = np.empty(m)
    adj[order] = np.minimum(stepped, 1.0)
    out[ok] = adj
    return out


def bh(pvalues: Iterable[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN entries stay NaN and do not count as tests).

    >>> bh([0.01, 0.04, 0.03, 0.005]).round(6).tolist()
    [0.02, 0.04, 0.04, 0.02]
    """
    p, ok = _finite(pvalues)
    out = np.full(p.shape, np.nan)
    if ok.any():
        out[ok] = sst.false_discovery_control(p[ok], method="bh")
    return out


def adjust(pvalues: Iterable[float], method: str) -> np.ndarray:
    """Adjust the p-values of one table for multiple comparisons; ``method`` is a key of :data:`CORRECTIONS`."""
    if method == "holm":
        return holm(pvalues)
    if method == "bh":
        return bh(pvalues)
    if method == "none":
        return _finite(pvalues)[0].copy()
    raise unknown("p-value correction", method, CORRECTIONS)
