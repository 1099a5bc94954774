"""Ratio-of-sums metrics: entity F1, micro/macro F1, token accuracy, computed from per-example sufficient statistics.

Some metrics are not a mean over examples but a ratio of sums over them: entity F1 is 2·TP / (n_pred + n_true)
summed over the sentences, so a sentence's own F1 means nothing. A task kind that scores such metrics stores, per
example, the counts the ratios need (``stats`` [n, k], one column per named count) and, per metric, a **recipe**::

    {"ratios": [{"num": {column: coef, ...}, "den": {column: coef, ...}}, ...]}

The metric on a set of examples is the mean, over the listed ratios whose denominator sum is > 0, of
``(Σ_i num·s_i) / (Σ_i den·s_i)`` (0 when no denominator is positive, sklearn's ``zero_division=0``): one ratio for
entity F1 or micro F1, one per label for macro F1. Because the sums are all that matter, every resample is cheap:
leaving example i out is ``S − s_i``, a bootstrap replicate is ``counts_b @ stats``, both vectorised.

>>> r = Ratios.parse("f1", {"ratios": [{"num": {"tp": 2}, "den": {"n_pred": 1, "n_true": 1}}]},
...                  ["tp", "n_pred", "n_true"])
>>> r.value(np.array([[1, 2, 1], [0, 0, 1]]))  # 2·1 / (2 + 2)
0.5

A second recipe type is the **median of a summed histogram** (the median angle error of surface normals, pooled over
every pixel of the examples): each example stores its counts per bin, bin j of the columns ``<prefix>0``,
``<prefix>1``, ... covering ``[low + j·width, low + (j+1)·width)``::

    {"median": {"bins": "angle_bin@", "width": 0.1}, "bounds": [0, 180]}

Its value on a set of examples is the median of the pooled values, each value placed by spreading a bin's c values
evenly over it (the k-th at ``low + (j + (k − ½)/c)·width``), and for an even count the mean of the two middle
ones, as ``numpy.median``: every order statistic stays in its own bin, so the value is within one bin width of the
median of the exact values (:class:`HistogramMedian`). Sums are again all that matter, so resampling is as cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.errors import BenchError

# bound the replicate-by-example count matrix of one chunk of bootstrap replicates (as bench.stats.vectorised does)
_CHUNK_ELEMENTS = 1 << 22

EXAMPLE = '{"ratios": [{"num": {"tp": 2}, "den": {"n_pred": 1, "n_true": 1}}]}'


@dataclass(frozen=True, eq=False)
class Ratios:
    """A parsed recipe: ``num`` and ``den`` are coefficient matrices [r, k] over the task's ``columns``."""

    name: str
    columns: tuple[str, ...]
    num: np.ndarray
    den: np.ndarray
    declared: tuple[float, float] | None = None  # the range the recipe states ("bounds": [0, 1] for an F1)

    @classmethod
    def parse(cls, name: str, recipe: Mapping[str, Any], columns: Sequence[str]) -> Ratios:
        """The recipe of metric ``name`` against the task's stats ``columns``; a one-line :class:`BenchError` naming
        what is wrong otherwise."""
        columns = tuple(columns)
        ratios = recipe.get("ratios") if isinstance(recipe, Mapping) else None
        if not isinstance(ratios, list) or not ratios:
            raise BenchError(f"recipe of metric {name!r} must be a non-empty list of ratios, e.g. {EXAMPLE}; "
                             f"got {recipe!r}")
        num, den = np.zeros((len(ratios), len(columns))), np.zeros((len(ratios), len(columns)))
        for r, ratio in enumerate(ratios):
            if not isinstance(ratio, Mapping) or set(ratio) != {"num", "den"}:
                raise BenchError(f"ratio {r} of metric {name!r} must have exactly the keys 'num' and 'den', e.g. "
                                 f"{EXAMPLE}; got {ratio!r}")
            for part, matrix in (("num", num), ("den", den)):
                terms = ratio[part]
                if not isinstance(terms, Mapping) or not terms:
                    raise BenchError(f"ratio {r} of metric {name!r}: {part!r} must map stats columns to "
                                     f"coefficients, got {terms!r}")
                for column, coef in terms.items():
                    if column not in columns:
                        raise BenchError(f"ratio {r} of metric {name!r} names stats column {column!r}; the task's "
                                         f"stats are {list(columns)}")
                    if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef):
                        raise BenchError(f"ratio {r} of metric {name!r}: coefficient of {column!r} must be a "
                                         f"finite number, got {coef!r}")
                    matrix[r, columns.index(column)] = float(coef)
        bounds = recipe.get("bounds")
        if bounds is not None and not (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                                       and all(isinstance(b, (int, float)) for b in bounds) and bounds[0] < bounds[1]):
            raise BenchError(f"recipe of metric {name!r}: bounds must be [low, high] with low < high, got {bounds!r}")
        return cls(name, columns, num, den, None if bounds is None else (float(bounds[0]), float(bounds[1])))

    @property
    def bounds(self) -> tuple[float, float]:
        """The metric's range: the one the recipe states (``"bounds": [0, 1]``: an F1, a precision), else as far as
        its coefficients show it (≥ 0 when every one is: counts over counts)."""
        if self.declared is not None:
            return self.declared
        nonnegative = bool((self.num >= 0).all() and (self.den >= 0).all())
        return (0.0 if nonnegative else -math.inf), math.inf

    def of_sums(self, sums: np.ndarray) -> np.ndarray:
        """The metric from column sums ``[..., k]`` (any leading shape): mean over the ratios with a positive
        denominator, 0 when none has one."""
        sums = np.asarray(sums, dtype=float)
        n, d = sums @ self.num.T, sums @ self.den.T
        valid = d > 0
        ratio = np.zeros(np.broadcast(n, d).shape)
        np.divide(n, d, out=ratio, where=valid)
        count = valid.sum(axis=-1)
        total = ratio.sum(axis=-1)
        return np.divide(total, count, out=np.zeros(np.shape(total)), where=count > 0)

    def value(self, stats: np.ndarray) -> float:
        """The metric on all examples of ``stats`` [n, k]."""
        return float(self.of_sums(self._checked(stats).sum(axis=0)))

    def leave_one_out(self, stats: np.ndarray) -> np.ndarray:
        """``out[i]``: the metric without example i (column sums ``S − s_i``), for every i at once."""
        stats = self._checked(stats)
        return self.of_sums(stats.sum(axis=0)[None, :] - stats)

    def replicates(self, stats: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``out[b]``: the metric on the examples ``idx[b]`` (int array [B, n], drawn with replacement)."""
        stats, idx = self._checked(stats), np.asarray(idx)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"idx must be an int array [B, n], got {idx.dtype} {idx.shape}")
        n = len(stats)
        out = np.empty(idx.shape[0])
        step = max(1, _CHUNK_ELEMENTS // max(1, n))
        for start in range(0, idx.shape[0], step):
            rows = idx[start : start + step]
            # how often each example was drawn in each replicate, then the replicates' column sums in one product
            codes = (np.arange(len(rows))[:, None] * n + rows).ravel()
            counts = np.bincount(codes, minlength=len(rows) * n).reshape(len(rows), n)
            out[start : start + step] = self.of_sums(counts @ stats)
        return out

    def _checked(self, stats: np.ndarray) -> np.ndarray:
        stats = np.asarray(stats, dtype=float)
        if stats.ndim != 2 or stats.shape[1] != len(self.columns):
            raise ValueError(f"metric {self.name!r} needs stats [n, {len(self.columns)}] ({', '.join(self.columns)}),"
                             f" got shape {stats.shape}")
        return stats


def parse_recipe(name: str, recipe: Mapping[str, Any], columns: Sequence[str]) -> Ratios:
    """A recipe of either type: a histogram median when it says ``"median"``, else ratios of sums."""
    if isinstance(recipe, Mapping) and "median" in recipe:
        return HistogramMedian.parse(name, recipe, columns)
    return Ratios.parse(name, recipe, columns)


def recipes_of(spec: Mapping[str, Any]) -> dict[str, Ratios]:
    """The parsed recipes of a record's task spec (``{"stats": [...], "recipes": {metric: recipe}}``); empty when
    the task has none (its metrics are computed from target and prediction by name)."""
    recipes, columns = spec.get("recipes") or {}, spec.get("stats") or []
    if recipes and not columns:
        raise BenchError(f"task spec has recipes for {sorted(recipes)} but no 'stats' column names; add "
                         f"\"stats\": [column, ...] naming the columns of the stored stats array")
    return {name: parse_recipe(name, recipe, columns) for name, recipe in recipes.items()}


MEDIAN_EXAMPLE = '{"median": {"bins": "angle_bin@", "width": 0.1}, "bounds": [0, 180]}'


@dataclass(frozen=True, eq=False)
class HistogramMedian(Ratios):
    """The median of the values pooled over examples, from per-example histograms (columns ``bins``, in order).

    A subclass of :class:`Ratios` with no ratios (``num``/``den`` have no rows): only :meth:`of_sums` differs, so
    :meth:`value`, :meth:`leave_one_out` and :meth:`replicates` resample it exactly as they do ratios.

    >>> m = HistogramMedian.parse("median", {"median": {"bins": "b@", "width": 1.0}}, ["n", "b@0", "b@1", "b@2"])
    >>> m.value(np.array([[5, 1, 0, 0], [3, 0, 0, 1]]))  # values at 0.5 and 2.5: numpy's median of the two
    1.5
    """

    bins: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # column index of bin j
    width: float = 1.0
    low: float = 0.0

    @classmethod
    def parse(cls, name: str, recipe: Mapping[str, Any], columns: Sequence[str]) -> HistogramMedian:
        columns = tuple(columns)
        spec = recipe.get("median")
        if set(recipe) - {"median", "bounds"} or not isinstance(spec, Mapping) or set(spec) - {"bins", "width", "low"}:
            raise BenchError(f"recipe of metric {name!r} must be {MEDIAN_EXAMPLE} ('low': the first bin's lower "
                             f"edge, 0 by default); got {recipe!r}")
        prefix, width, low = spec.get("bins"), spec.get("width"), spec.get("low", 0.0)
        for what, v in (("width", width), ("low", low)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise BenchError(f"recipe of metric {name!r}: {what} must be a finite number, got {v!r}")
        if width <= 0:
            raise BenchError(f"recipe of metric {name!r}: width must be > 0, got {width!r}")
        named = [c for c in columns if isinstance(prefix, str) and prefix and c.startswith(prefix)]
        if not named or named != [f"{prefix}{j}" for j in range(len(named))]:
            raise BenchError(f"recipe of metric {name!r}: bins {prefix!r} must prefix stats columns "
                             f"{prefix}0, {prefix}1, ... in that order; the task's stats are {list(columns)[:6]}...")
        base = Ratios.parse(name, {"ratios": [{"num": {named[0]: 1}, "den": {named[0]: 1}}],
                                   **({"bounds": recipe["bounds"]} if "bounds" in recipe else {})}, columns)
        empty = np.zeros((0, len(columns)))
        return cls(name, columns, empty, empty, base.declared, np.array([columns.index(c) for c in named]),
                   float(width), float(low))

    @property
    def bounds(self) -> tuple[float, float]:
        """The declared range, else from the first bin's lower edge up: a median stays within its bins."""
        return self.declared if self.declared is not None else (self.low, math.inf)

    def of_sums(self, sums: np.ndarray) -> np.ndarray:
        """The median from summed histograms ``[..., k]`` (any leading shape); 0 where no value was counted."""
        hist = np.asarray(sums, dtype=float)[..., self.bins]
        total = hist.sum(axis=-1)
        # 1-based ranks of the middle value(s): both (N+1)/2 for odd N, N/2 and N/2 + 1 for even N
        lower, upper = np.floor((total + 1) / 2), np.ceil((total + 1) / 2)
        value = (self._at(hist, lower) + self._at(hist, upper)) / 2
        return np.where(total > 0, value, 0.0)

    def _at(self, hist: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """The value of the ``rank``-th smallest (1-based): the bin holding it, the values in a bin spread evenly."""
        cum = np.cumsum(hist, axis=-1)
        j = np.minimum((cum < rank[..., None]).sum(axis=-1), hist.shape[-1] - 1)  # the bin whose counts reach it
        count = np.take_along_axis(hist, j[..., None], axis=-1)[..., 0]
        before = np.take_along_axis(cum, j[..., None], axis=-1)[..., 0] - count
        share = np.divide(rank - before - 0.5, count, out=np.full(np.shape(count), 0.5), where=count > 0)
        return self.low + (j + share) * self.width
