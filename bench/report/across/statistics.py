"""The statistics of the cross-suite report, after Agarwal et al. (2021) and Demšar (2006), computed with scipy.

IQM and means with stratified bootstrap intervals (:func:`stratified_interval`), performance profiles, the
probability of improvement P(X > Y), and average ranks with the Friedman test, the Nemenyi post-hoc and Demšar's
critical difference (:func:`rank_test`). The package docstring of :mod:`bench.report.across` defines each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as st

SEED = 0  # the bootstrap's seed: the same records give the same files


def iqm(values) -> float:
    """Interquartile mean of all values (rliable's ``aggregate_iqm``: scipy's trim_mean cutting 25 % per side).

    >>> iqm([[1.0, 2.0, 3.0, 100.0], [2.0, 2.0, 3.0, -50.0]])
    2.25
    """
    return float(st.trim_mean(np.asarray(values, dtype=float), 0.25, axis=None))


def pooled_iqm(*strata):
    """IQM of the runs of all strata pooled (the last axis; leading batch axes kept), as a bootstrap statistic."""
    return st.trim_mean(np.concatenate(strata, axis=-1), 0.25, axis=-1)


def pooled_mean(*strata):
    """Mean of the runs of all strata pooled (the last axis), as a bootstrap statistic."""
    return np.concatenate(strata, axis=-1).mean(axis=-1)


def profile_at(taus: np.ndarray) -> Callable:
    """The performance profile on the grid ``taus`` as a bootstrap statistic: the fraction of pooled runs > τ."""

    def fraction_above(*strata):
        runs = np.concatenate(strata, axis=-1)
        return np.moveaxis((runs[..., None, :] > taus[:, None]).mean(axis=-1), -1, 0)  # (taus, *batch)

    return fraction_above


def probability_of_improvement(x: list[np.ndarray], y: list[np.ndarray]):
    """P(X > Y): per stratum the share of (x run, y run) pairs with x > y, ties counting one half (Mann–Whitney U
    over m·n, rliable's ``probability_of_improvement``), averaged over strata. Leading batch axes broadcast.

    >>> probability_of_improvement([np.array([1.0, 3.0])], [np.array([2.0, 3.0])])  # (0 + 0 + 1 + 0.5) / 4
    0.375
    """
    per = [(a[..., :, None] > b[..., None, :]).mean(axis=(-2, -1))
           + 0.5 * (a[..., :, None] == b[..., None, :]).mean(axis=(-2, -1)) for a, b in zip(x, y)]
    out = np.mean(per, axis=0)
    return float(out) if np.ndim(out) == 0 else out


def stratified_interval(strata: list[np.ndarray], statistic: Callable, level: float, reps: int,
                        seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval at ``level`` of ``statistic(*strata)`` under the stratified bootstrap: each stratum's
    runs resampled with replacement, independently, its size kept (:func:`scipy.stats.bootstrap`, one sample per
    stratum). A one-run stratum stays as it is (its only resample); with no stratum of two runs the interval is NaN.
    ``statistic`` takes arrays with leading batch axes and reduces the last one."""
    strata = [np.asarray(s, dtype=float) for s in strata]
    varying = [i for i, s in enumerate(strata) if len(s) >= 2]
    shape = np.shape(statistic(*strata))
    if not varying:
        return np.full(shape, np.nan), np.full(shape, np.nan)

    def resampled(*samples, axis=-1):
        batch = samples[0].shape[:-1]
        full = [np.broadcast_to(s, batch + s.shape) for s in strata]
        for i, sample in zip(varying, samples):
            full[i] = sample
        return statistic(*full)

    result = st.bootstrap([strata[i] for i in varying], resampled, n_resamples=reps, paired=False,
                          vectorized=True, method="percentile", confidence_level=level, axis=-1,
                          rng=np.random.default_rng(seed))
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


@dataclass
class Ranks:
    """Average ranks over the strata (1 = best), the Friedman test, the Nemenyi p-values and the CD."""

    blocks: pd.DataFrame  # strata × methods: seed-mean scores
    average: pd.Series  # method -> average rank
    friedman: float  # χ² (NaN with fewer than 3 methods)
    friedman_p: float
    nemenyi: pd.DataFrame  # methods × methods p-values
    cd: float  # Demšar's critical difference at α


def rank_test(blocks: pd.DataFrame, level: float) -> Ranks:
    """Ranks of the methods (columns) within each stratum (row) of seed-mean scores, 1 = best (ties share the
    average rank), averaged; Friedman (scipy) when there are 3 methods or more; Nemenyi p-values
    (scikit-posthocs); Demšar's CD = q_α √(k(k+1)/(6N)), q_α the studentized range quantile over √2."""
    import scikit_posthocs as sp

    values = blocks.to_numpy(float)
    n, k = values.shape
    average = pd.Series(st.rankdata(-values, axis=1).mean(axis=0), index=blocks.columns)
    friedman = friedman_p = math.nan
    if k >= 3 and n >= 2:
        test = st.friedmanchisquare(*values.T)
        friedman, friedman_p = float(test.statistic), float(test.pvalue)
    nemenyi = sp.posthoc_nemenyi_friedman(pd.DataFrame(values, columns=list(blocks.columns)))
    nemenyi = nemenyi.loc[list(blocks.columns), list(blocks.columns)]
    cd = float(st.studentized_range.ppf(level, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))
    return Ranks(blocks, average, friedman, friedman_p, nemenyi, cd)
