"""Two-level intervals and tests: training seeds and test examples, calibrated for the 2–5 seeds people run.

A leaderboard score is a mean over k training seeds of a metric on one fixed test set. It varies for two reasons:
another seed trains another model (the **seed term**), and another test set would score every model differently
(the **test-set term**, shared by every seed and every row because they all see the same examples). A percentile
bootstrap over k ≤ 5 seeds spans about [min, max] of the seeds and shrinks their variance by (k−1)/k, so its
intervals under-cover and its tests mark differences between two copies of one configuration far more often than
α. This module replaces it with the two-level t interval

    estimate ± t_ν(1 − α/2) · √(s²/k + c_e)

* ``s²`` — the sample variance over seeds of the per-seed scores (of the per-seed *differences* when two rows share
  their seeds: a paired test); it estimates the seed variance plus the part of the test-set noise that differs
  between models;
* ``c_e`` — the test-set covariance *between* different seeds' scores (the part of the test-set noise that averaging
  over seeds cannot remove), from jackknife pseudo-values of every metric on every example: no Monte Carlo draw;
* ``ν`` — Welch–Satterthwaite degrees of freedom: k − 1 when the seed term dominates, large when the test set does.

With one seed the seed variance is unknown: the variance is the test-set variance alone and the result says so
(``test_only``); such a result never backs a significance mark.

Scores are linear combinations of per-seed metric values (a task column, Avg = mean of the tasks' primaries, Δm%
linearised around the baseline's seed means, differences of rows), so one function, :func:`estimate`, serves every
column. Rows that share their seeds are paired seed by seed; rows with other seeds enter as independent groups.

Example: two seeds of one row on a 4-example task, scored by accuracy.

>>> target = np.array([0, 1, 1, 0])
>>> s = Scores.of("accuracy", target, np.array([[0, 1, 1, 1], [0, 1, 0, 0]]), seeds=(0, 1), space="t")
>>> s.x.tolist()
[0.75, 0.75]
>>> r = estimate([(1.0, s)])
>>> round(r.value, 2), r.df > 1e6, round(r.seed_sd, 2), r.test_only
(0.75, True, 0.0, False)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sst

from bench import metrics as bench_metrics
from bench.stats import _macro_f1, _mcc, check_level
from bench.stats.ranking import mean_ap_leave_one_out
from bench.stats.ratios import Ratios

_LINEAR = {"accuracy", "mse", "mae"}
# the range of each metric of bench.metrics: an interval is cut to it
BOUNDS = {"accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "f1": (0.0, 1.0), "mcc": (-1.0, 1.0),
          "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0), "mse": (0.0, math.inf), "mae": (0.0, math.inf),
          "mean_ap": (0.0, 1.0)}
_CONFUSION = {"macro_f1", "mcc"}


# ----------------------------------------------------------------------------------------------- jackknife


def pseudo_values(name: str | Ratios, target: np.ndarray | None, pred: np.ndarray) -> tuple[float, np.ndarray]:
    """The metric on all examples and its delete-one jackknife pseudo-values ``ψ_i = n·θ − (n−1)·θ_(−i)``.

    The jackknife variance of the metric is ``var(ψ, ddof=1) / n`` and the covariance of two metrics computed on the
    same examples is ``cov(ψ1, ψ2) / n``; for a mean (accuracy, mse, mae) ψ is the per-example score itself. Closed
    forms for accuracy, mse, mae, binary f1, macro-F1 and MCC (leaving one example out changes one cell of the
    confusion matrix), Pearson (running sums) and multi-label mean average precision (:mod:`bench.stats.ranking`);
    Spearman is Pearson on the full sample's ranks; any other metric of :mod:`bench.metrics` is recomputed n times.
    A ratio-of-sums metric (:class:`~bench.stats.ratios.Ratios`, a parsed recipe) reads the per-example stats [n, k]
    in place of ``pred`` (``target`` is not used): leaving one example out subtracts its row from the column sums.

    >>> theta, psi = pseudo_values("accuracy", np.array([1, 0, 1]), np.array([1, 1, 1]))
    >>> round(theta, 4), psi.tolist()
    (0.6667, [1.0, 0.0, 1.0])
    """
    pred = np.asarray(pred)
    n = len(pred)
    if n < 2:
        raise ValueError(f"need at least 2 examples for a jackknife, got {n}")
    if isinstance(name, Ratios):
        theta = name.value(pred)
        return theta, n * theta - (n - 1) * name.leave_one_out(pred)
    target = np.asarray(target)
    if name in _LINEAR:
        if name == "accuracy":
            per = (target == pred).astype(float)
        else:
            err = target.astype(float) - pred.astype(float)
            per = err**2 if name == "mse" else np.abs(err)
        return float(per.mean()), per
    if name == "f1" and np.isin(target, (0, 1)).all() and np.isin(pred, (0, 1)).all():
        t1, p1 = target == 1, pred == 1
        tp_i, both = (t1 & p1).astype(float), t1.astype(float) + p1.astype(float)
        tp, denom = tp_i.sum(), both.sum()
        theta = 2 * tp / denom if denom else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = np.where(denom - both > 0, 2 * (tp - tp_i) / (denom - both), 0.0)
        return float(theta), n * theta - (n - 1) * loo
    if name in _CONFUSION:
        classes, codes = np.unique(np.concatenate([target, pred]), return_inverse=True)
        k = len(classes)
        t, p = codes[:n], codes[n:]
        cm = np.zeros((k, k))
        np.add.at(cm, (t, p), 1.0)
        cells, where = np.unique(t * k + p, return_inverse=True)
        reduced = np.repeat(cm[None], len(cells) + 1, axis=0)
        reduced[np.arange(len(cells)), cells // k, cells % k] -= 1.0  # the last one stays the full matrix
        values = _macro_f1(reduced) if name == "macro_f1" else _mcc(reduced)
        theta, loo = float(values[-1]), values[:-1][where]
        return theta, n * theta - (n - 1) * loo
    if name == "mean_ap":  # multi-label: one sort per label, then every leave-one-out AP from running sums
        theta, loo = mean_ap_leave_one_out(target, pred)
        return theta, n * theta - (n - 1) * loo
    if name in ("pearson", "spearman"):
        x, y = target.astype(float), pred.astype(float)
        if name == "spearman":
            x, y = sst.rankdata(x), sst.rankdata(y)
        theta, loo = _pearson_loo(x, y)
        return theta, n * theta - (n - 1) * loo
    return _generic(name, target, pred)


def _pearson_loo(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Pearson r on all points and with each point left out, from centred running sums (constant: r = 0, as
    :func:`bench.metrics.compute` scores it)."""
    x, y = x - x.mean(), y - y.mean()
    n = len(x)

    def r(m, sx, sy, sxx, syy, sxy):
        vx, vy = m * sxx - sx * sx, m * syy - sy * sy
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (m * sxy - sx * sy) / np.sqrt(vx * vy)
        # a (numerically) constant side scores 0; compare with the scale of the sums so that rounding is not variance
        flat = (vx <= 1e-12 * m * np.maximum(sxx, 1e-300)) | (vy <= 1e-12 * m * np.maximum(syy, 1e-300))
        return np.clip(np.where(flat | ~np.isfinite(out), 0.0, out), -1.0, 1.0)

    sums = (x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
    theta = float(r(float(n), *sums))
    loo = r(n - 1.0, sums[0] - x, sums[1] - y, sums[2] - x * x, sums[3] - y * y, sums[4] - x * y)
    return theta, loo


def _generic(name: str, target: np.ndarray, pred: np.ndarray) -> tuple[float, np.ndarray]:
    n = len(target)
    theta = float(bench_metrics.compute([name], target, pred)[name])
    loo = np.array([bench_metrics.compute([name], np.delete(target, i, axis=0), np.delete(pred, i, axis=0))[name]
                    for i in range(n)])
    return theta, n * theta - (n - 1) * loo


# ----------------------------------------------------------------------------------------------- scores


@dataclass(frozen=True, eq=False)
class Scores:
    """One row's per-seed scores on one column, with their test-set influence.

    ``x[s]`` is seed s's score on the whole test set; ``phi[space][s]`` its centred pseudo-values scaled so that the
    test-set covariance of two scores is the dot product of their ``phi`` over every shared example space
    (``Cov(x_u, x_v) = Σ_space ⟨phi_u, phi_v⟩``). A space is a set of test examples: each task of a multi-input suite
    has its own, the tasks of a single-input suite share one, so that they are resampled jointly.
    """

    seeds: tuple[int, ...]
    x: np.ndarray
    phi: dict[str, np.ndarray]

    @classmethod
    def of(cls, name: str | Ratios, target: np.ndarray | None, preds: np.ndarray, seeds: Sequence[int], space: str,
           factor: float = 1.0) -> Scores:
        """Scores of metric ``name`` from ``preds`` [k, n] (one prediction array per seed) against ``target``; for a
        ratio-of-sums metric ``preds`` holds each seed's per-example stats [k, n, columns] (``target`` unused)."""
        preds = np.asarray(preds)
        preds = preds[None] if preds.ndim == (2 if isinstance(name, Ratios) else 1) else preds
        if preds.shape[0] != len(seeds):
            raise ValueError(f"preds has {preds.shape[0]} seeds, seeds names {len(seeds)}")
        n = preds.shape[1]
        x, phi = np.empty(len(seeds)), np.empty((len(seeds), n))
        for s, pred in enumerate(preds):
            theta, psi = pseudo_values(name, target, pred)
            x[s], phi[s] = theta, (psi - psi.mean()) / math.sqrt(n * (n - 1))
        return cls(tuple(seeds), x * factor, {space: phi * factor})

    def combine(self, others: Iterable[tuple[float, Scores]]) -> Scores:
        """``self`` plus Σ c·other, seed by seed (all of one row: the same seeds)."""
        x, phi = self.x.copy(), {k: v.copy() for k, v in self.phi.items()}
        for c, other in others:
            if other.seeds != self.seeds:
                raise ValueError(f"cannot add scores of seeds {other.seeds} to seeds {self.seeds} seed by seed")
            x += c * other.x
            for space, v in other.phi.items():
                phi[space] = phi[space] + c * v if space in phi else c * v
        return Scores(self.seeds, x, phi)

    @staticmethod
    def weighted(terms: Sequence[tuple[float, Scores]]) -> Scores:
        """Σ c·scores over scores of one row (for example Avg: the mean of its tasks' primary scores)."""
        (c0, first), rest = terms[0], terms[1:]
        start = Scores(first.seeds, c0 * first.x, {k: c0 * v for k, v in first.phi.items()})
        return start.combine(rest)


def delta_m_terms(mine: dict, theirs: dict, directions: dict) -> list[tuple[float, Scores]] | None:
    """Δm% of a row against its baseline as Σ c · (row mean of scores), linearised at the baseline's seed means.

    ``mine`` and ``theirs`` map (task, metric) to the two rows' :class:`Scores`, in the order Δm% lists its metrics;
    per seed the value is (100/T) Σ_t (1/M_t) Σ_m (−1)^{l_tm} (N_tm,s − B_tm,s) / |B̄_tm|, so its mean over seeds is
    exactly :func:`bench.metrics.delta_m` on the seed means. A zero baseline leaves its metric out, as there; None
    when no metric is left.
    """
    per_task: dict[str, list[tuple[tuple[str, str], float]]] = {}
    for key, base in theirs.items():
        b = float(base.x.mean())
        if b == 0 or math.isnan(b):
            continue
        sign = -1.0 if directions[key] == "min" else 1.0
        per_task.setdefault(key[0], []).append((key, sign / abs(b)))
    if not per_task:
        return None
    row, baseline = [], []
    for metrics in per_task.values():
        for key, w in metrics:
            weight = 100.0 * w / (len(per_task) * len(metrics))
            row.append((weight, mine[key]))
            baseline.append((-weight, theirs[key]))
    return [(1.0, Scores.weighted(row)), (1.0, Scores.weighted(baseline))]


# ----------------------------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """A linear combination of row means with its two-level standard error.

    ``var = seed_term + test_term`` (``test_term`` is c_e, the test-set covariance between seeds; with one seed per
    group the whole test-set variance and ``test_only`` is true); ``df`` Welch–Satterthwaite; ``seed_sd`` the SD over
    seeds of the per-seed values (NaN below 2 seeds or with several seed groups); ``test_se`` the test-set standard
    error of the estimate (all of the test-set variance, for the reader: which term a claim rests on)."""

    value: float
    var: float
    df: float
    seed_term: float
    test_term: float
    seed_sd: float
    test_se: float
    test_only: bool
    paired: bool
    k: int

    @property
    def se(self) -> float:
        return math.sqrt(self.var) if self.var > 0 else 0.0

    def interval(self, level: float) -> tuple[float, float]:
        """``value ± t_df((1 + level)/2) · se``."""
        level = check_level(level)
        half = _quantile(level, self.df) * self.se
        return self.value - half, self.value + half

    @property
    def p(self) -> float:
        """Two-sided p of "the combination is 0" (t with ``df``; 1 when both the value and its variance are 0)."""
        if self.var <= 0:
            return 1.0 if self.value == 0 else math.nan
        return float(2 * sst.t.sf(abs(self.value) / self.se, self.df))


def _quantile(level: float, df: float) -> float:
    q = (1 + level) / 2
    return float(sst.norm.ppf(q) if math.isinf(df) else sst.t.ppf(q, df))


def estimate(terms: Sequence[tuple[float, Scores]]) -> Estimate:
    """The two-level estimate of Σ_r c_r · mean_seeds(scores_r) over rows r (module docstring).

    Rows with the same seeds form one group and are combined seed by seed (paired); groups are independent at the
    seed level and share the test set. Per group g with k_g seeds and per-seed values z_gs: seed term Σ s_g²/k_g;
    test term c_e = Σ_g o_g + Σ_{g≠h} ⟨Φ̄_g, Φ̄_h⟩, where o_g is the mean test-set covariance between two different
    seeds of g and Φ̄_g the mean influence of g. Any group with one seed makes the variance the test-set variance
    alone (``test_only``).
    """
    groups: dict[tuple[int, ...], Scores] = {}
    for c, scores in terms:
        if scores.seeds in groups:
            groups[scores.seeds] = groups[scores.seeds].combine([(c, scores)])
        else:
            groups[scores.seeds] = Scores.weighted([(c, scores)])
    value = float(sum(g.x.mean() for g in groups.values()))
    # a fixed order of example spaces: summing them in a set's hash order made the last bit vary between runs
    spaces = sorted({space for g in groups.values() for space in g.phi})
    mean_phi = {space: [g.phi[space].mean(axis=0) for g in groups.values() if space in g.phi] for space in spaces}
    total_test = float(sum(np.sum(np.sum(vs, axis=0) ** 2) for vs in mean_phi.values()))
    k_min = min(len(seeds) for seeds in groups)
    if k_min < 2:
        total_test = max(total_test, 0.0)
        return Estimate(value, total_test, math.inf, math.nan, total_test, math.nan, math.sqrt(total_test), True,
                        len(groups) == 1 and len(terms) > 1, k_min)
    seed_term, ws_denominator, test_term = 0.0, 0.0, 0.0
    for g in groups.values():
        k = len(g.seeds)
        s2 = float(np.var(g.x, ddof=1))
        seed_term += s2 / k
        ws_denominator += (s2 / k) ** 2 / (k - 1)
        for phi in g.phi.values():
            full = float(np.sum(phi.sum(axis=0) ** 2))
            own = float(np.sum(phi**2))
            mean = phi.mean(axis=0)
            # o_g (between two different seeds of g) minus ‖Φ̄_g‖², which the cross sum below adds back
            test_term += (full - own) / (k * (k - 1)) - float(np.sum(mean**2))
    test_term += total_test
    test_term = max(test_term, 0.0)  # a covariance estimate; the test-set part of a variance cannot be negative
    var = seed_term + test_term
    df = math.inf if ws_denominator == 0 else var**2 / ws_denominator
    only = next(iter(groups.values())) if len(groups) == 1 else None
    seed_sd = float(np.std(only.x, ddof=1)) if only is not None else math.nan
    return Estimate(value, var, df, seed_term, test_term, seed_sd, math.sqrt(max(total_test, 0.0)), False,
                    len(groups) == 1 and len(terms) > 1, k_min)


def mde(estimates: Sequence[Estimate], alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a table: ``(t_ν(1−α/2) + t_ν(power)) · SE`` for a typical pair of rows, SE and ν
    the medians over the given difference estimates. NaN when there are none.

    >>> e = Estimate(0.0, 4.0, math.inf, 4.0, 0.0, 1.0, 0.0, False, True, 3)
    >>> round(mde([e]), 3)  # (1.96 + 0.8416) * 2
    5.603
    """
    if not estimates:
        return math.nan
    se = float(np.median([e.se for e in estimates]))
    df = float(np.median([e.df for e in estimates]))
    return float((_quantile(1 - alpha, df) + _t_power(power, df)) * se)


def _t_power(power: float, df: float) -> float:
    return float(sst.norm.ppf(power) if math.isinf(df) else sst.t.ppf(power, df))


def seeds_needed(seed_var: float, test_term: float, effect: float, alpha: float = 0.05, power: float = 0.8,
                 most: int = 100) -> int | None:
    """The fewest seeds k (≥ 2) at which a paired difference of size ``effect`` is detected with ``power``, given the
    per-seed variance of the difference ``seed_var`` and the test-set covariance term ``test_term`` (which more seeds
    do not shrink); None when even ``most`` seeds are not enough.

    >>> seeds_needed(4.0, 0.0, 2.0)
    10
    """
    for k in range(2, most + 1):
        var = seed_var / k + test_term
        df = math.inf if seed_var == 0 else var**2 / ((seed_var / k) ** 2 / (k - 1))
        if (_quantile(1 - alpha, df) + _t_power(power, df)) * math.sqrt(var) <= abs(effect):
            return k
    return None
