"""Paired bootstrap statistics for leaderboards: intervals, tests, multiple-comparison corrections and power.

Protocol
--------
Every row of a table (a strategy variant) is evaluated on the same fixed test examples of each task, with the same
training seeds, so rows are compared *paired*:

1. :func:`draw` makes **one** set of ``B`` bootstrap replicates per table: for each replicate it resamples the seed
   positions with replacement (when there is more than one seed) and, independently per task, the test examples with
   replacement. Every row is scored on these same replicates; that sharing is what makes differences paired.
2. :func:`replicate_scores` scores one row on one task for every replicate, "resample seeds, then examples": replicate
   ``b`` is the mean over the resampled seeds of the metric on the resampled examples. The spread of these replicates
   therefore contains both seed-to-seed and test-set variance.
3. A row's interval is the percentile interval of its replicates (:func:`interval`). A difference between two rows is
   the element-wise difference of their replicate arrays; its interval and its p-value (:func:`paired_bootstrap_p`)
   come from that difference, so noise shared by both rows (hard examples, a lucky seed) cancels.
4. p-values of a table are corrected for multiple comparisons with :func:`adjust` (Holm by default in reports), and
   :func:`mde` says how large a true difference the table could reliably detect at all.

For a single seed, :func:`wilson` (accuracy as a binomial proportion), :func:`mcnemar` (paired correctness) and
:func:`permutation_p` (paired per-example scores) are closed-form or exact cross-checks of the bootstrap.

Metrics are computed vectorised over the replicate axis (:func:`metric_matrix`) and agree with
:func:`bench.metrics.compute` on every replicate.
"""

from __future__ import annotations

import inspect
import numbers
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sst

from bench import metrics as bench_metrics
from bench.errors import BenchError, unknown

LEVEL = 0.95  # default confidence level

CORRECTIONS = {"holm": "Holm–Bonferroni", "bh": "Benjamini–Hochberg", "none": "no correction"}

# Gathering target[idx] for all replicates at once costs B * n elements per array; bound it so a large test set
# (n ~ 1e5) with B = 2000 does not need gigabytes.
_CHUNK_ELEMENTS = 1 << 22

_CLASSIFICATION = ("accuracy", "macro_f1", "f1", "mcc")
_CORRELATION = ("pearson", "spearman")
_ERROR = ("mse", "mae")
VECTORISED = _CLASSIFICATION + _CORRELATION + _ERROR


def check_level(level: float) -> float:
    """Return ``level`` as a float if it is a valid confidence level, else raise :class:`BenchError`.

    >>> check_level(0.9)
    0.9
    """
    ok = isinstance(level, numbers.Real) and not isinstance(level, bool) and 0 < level < 1  # NaN fails 0 < level
    if not ok:
        raise BenchError(f"confidence level {level!r} must lie strictly between 0 and 1, e.g. level=0.95")
    return float(level)


# ---------------------------------------------------------------------------------------------------------------------
# metrics over replicates


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


def metric_matrix(name: str, target: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Metric ``name`` on each bootstrap replicate: ``out[b] = metric(target[idx[b]], pred[idx[b]])``.

    ``idx`` is an int array [B, n] of example indices. The metrics in :data:`VECTORISED` are computed with numpy over
    the replicate axis; any other name of :data:`bench.metrics.METRICS` is computed replicate by replicate.

    >>> idx = np.array([[0, 1, 2, 3], [2, 2, 2, 0]])
    >>> metric_matrix("accuracy", np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), idx)
    array([0.75, 0.25])
    """
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


# ---------------------------------------------------------------------------------------------------------------------
# bootstrap replicates


@dataclass(frozen=True, eq=False)
class Draws:
    """One set of bootstrap replicates shared by every row of a table.

    ``examples[task]`` is an int array [B, n_task] of resampled example indices, ``seeds`` an int array [B, n_seeds]
    of resampled seed positions (a column of zeros for a single seed), ``over_seeds`` whether seeds are resampled.
    """

    examples: dict[str, np.ndarray]
    seeds: np.ndarray
    B: int
    over_seeds: bool

    def __post_init__(self) -> None:
        if self.seeds.ndim != 2 or self.seeds.shape[0] != self.B:
            raise ValueError(f"seeds must have shape [B={self.B}, n_seeds], got {self.seeds.shape}")
        for task, ex in self.examples.items():
            if ex.ndim != 2 or ex.shape[0] != self.B:
                raise ValueError(f"examples[{task!r}] must have shape [B={self.B}, n], got {ex.shape}")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # shared by every row of a table: an in-place edit would silently unpair them
    return a


def draw(n_examples: dict[str, int], n_seeds: int, B: int = 2000, seed: int = 0) -> Draws:
    """Draw the bootstrap replicates of a table with ``n_examples[task]`` test examples per task and ``n_seeds`` seeds.

    Deterministic in ``seed``. Each task's examples come from their own stream, keyed by ``seed`` and the task name,
    so a task's replicates (and intervals) do not change when tasks are added to or removed from the table.

    >>> d = draw({"a": 5}, n_seeds=3, B=4)
    >>> d.examples["a"].shape, d.seeds.shape, d.over_seeds
    ((4, 5), (4, 3), True)
    """
    if B < 1 or n_seeds < 1:
        raise ValueError(f"need B >= 1 and n_seeds >= 1, got B={B}, n_seeds={n_seeds}")
    over_seeds = n_seeds > 1
    if over_seeds:
        seeds = np.random.default_rng(seed).integers(0, n_seeds, size=(B, n_seeds))
    else:
        seeds = np.zeros((B, 1), dtype=np.int64)
    examples = {}
    for task, n in n_examples.items():
        if n < 1:
            raise ValueError(f"task {task!r} has {n} test examples; need at least 1")
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        examples[task] = _readonly(rng.integers(0, n, size=(B, n)))
    return Draws(examples=examples, seeds=_readonly(seeds), B=B, over_seeds=over_seeds)


def replicate_scores(name: str, target: np.ndarray, preds: np.ndarray, draws: Draws, task: str) -> np.ndarray:
    """Score one row on one task for every replicate: ``[B]`` means over resampled seeds of the resampled metric.

    ``preds`` is [n_seeds, n]: one prediction array per seed, in the seed order the draws were made for.
    """
    preds = np.asarray(preds)
    idx = draws.examples[task]
    if preds.ndim != 2 or preds.shape[0] != draws.seeds.shape[1]:
        raise ValueError(f"preds must have shape [n_seeds={draws.seeds.shape[1]}, n], got {preds.shape}")
    if preds.shape[1] != len(target) or idx.shape[1] != len(target):
        raise ValueError(f"task {task!r}: target has {len(target)} examples, preds {preds.shape[1]}, "
                         f"draws {idx.shape[1]}")
    # the metric of seed s on replicate b does not depend on how often s was drawn: compute each once, then gather
    per_seed = np.full((preds.shape[0], draws.B), np.nan)
    for s in np.unique(draws.seeds):
        per_seed[s] = metric_matrix(name, target, preds[s], idx)
    return per_seed[draws.seeds, np.arange(draws.B)[:, None]].mean(axis=1)


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; (nan, nan) when none is finite).

    >>> interval(np.arange(101), level=0.9)
    (5.0, 95.0)
    """
    level = check_level(level)
    r = np.asarray(replicates, dtype=float)
    if not np.any(~np.isnan(r)):
        return float("nan"), float("nan")
    # round away the binary noise of 1 - level (1 - 0.9 = 0.0999...98), which would otherwise shift a percentile
    tail = round((1 - level) / 2, 12)
    lo, hi = np.nanquantile(r, [tail, 1 - tail])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------------------------
# tests


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


# ---------------------------------------------------------------------------------------------------------------------
# multiple comparisons


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


# ---------------------------------------------------------------------------------------------------------------------
# power


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
