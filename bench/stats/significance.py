"""Tests of a difference and the power of a table.

:func:`paired_bootstrap_p` is the leaderboard's test (on the replicates of :mod:`bench.stats.bootstrap`);
:func:`wilson`, :func:`mcnemar` and :func:`permutation_p` are closed-form or exact cross-checks of it for a single
seed; :func:`mde` says how large a true difference a table could reliably detect at all.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
from scipy import stats as sst

from bench.stats.bootstrap import LEVEL, check_level


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials ((nan, nan) when n == 0).

    >>> tuple(round(x, 4) for x in wilson(8, 10))
    (0.4902, 0.9433)
    """
    level = check_level(level)
    if n == 0:
        return float("nan"), float("nan")
    ci = sst.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value for paired per-example correctness of two classifiers.

    >>> mcnemar(np.array([1, 1, 0, 1], bool), np.array([1, 1, 0, 1], bool))
    1.0
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must cover the same examples, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    # only the discordant examples carry information; under H0 each is equally likely to favour a or b
    return float(sst.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap_p(diff_replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value for H0: the paired difference (A − B) is 0.

    By the duality with the percentile interval, p is the smallest ``1 - level`` at which the interval of the
    difference excludes 0: ``p = min(1, 2 * min(P(d <= 0), P(d >= 0)))``, each tail estimated as
    ``(count + 1) / (B + 1)`` so that a finite number of replicates never claims p = 0. NaN replicates are ignored;
    NaN when none is left.

    >>> paired_bootstrap_p(np.zeros(100))  # identical rows
    1.0
    """
    d = np.asarray(diff_replicates, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    tail = min(np.sum(d <= 0), np.sum(d >= 0))
    return float(min(1.0, 2 * (tail + 1) / (d.size + 1)))


# scipy >= 1.15 takes rng=, older versions random_state=
_PERM_RNG = "rng" if "rng" in inspect.signature(sst.permutation_test).parameters else "random_state"


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def permutation_p(x: np.ndarray, y: np.ndarray, statistic: Callable | None = None, n_resamples: int = 9999,
                  seed: int = 0) -> float:
    """Two-sided paired permutation test: randomly swap x[i] and y[i] within each pair.

    ``statistic(x, y[, axis])`` defaults to the mean of ``x - y``. Exact when 2**n <= n_resamples.

    >>> permutation_p(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    1.0
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must be paired, got shapes {x.shape} and {y.shape}")
    res = sst.permutation_test((x, y), statistic or _mean_diff, permutation_type="samples", alternative="two-sided",
                               n_resamples=n_resamples, **{_PERM_RNG: seed})
    return float(res.pvalue)


def mde(diff_replicates: list[np.ndarray], alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a table.

    The smallest true difference this many seeds and examples would detect with probability ``power`` at level
    ``alpha``, for a typical pair of rows: ``(z_{1-alpha/2} + z_{power}) * SE``, where SE is the median over the given
    paired-difference replicate arrays of their standard deviation (ddof=1, NaN replicates ignored). NaN when the
    list is empty.

    >>> round(mde([np.array([-1.0, 1.0])], alpha=0.05, power=0.8), 4)  # sd = sqrt(2)
    3.962
    """
    if len(diff_replicates) == 0:
        return float("nan")
    se = float(np.median([np.nanstd(np.asarray(d, dtype=float), ddof=1) for d in diff_replicates]))
    return float((sst.norm.ppf(1 - alpha / 2) + sst.norm.ppf(power)) * se)
