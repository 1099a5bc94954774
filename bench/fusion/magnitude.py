"""Selecting task-vector entries by magnitude, exactly and in streaming: fractions, keep counts, cuts, radix select.

The TIES family (:mod:`bench.fusion.ties`) and Model Breadcrumbs (:mod:`bench.fusion.breadcrumbs`) keep the entries
of each task vector whose magnitude lies above (or below) a threshold. Every "fraction kept" is a fraction in (0, 1],
as in FusionBench and mergekit, and keep counts are computed exactly (:func:`floor_times`). A :class:`Cut` is such a
selection; :func:`top_cut` and :func:`bottom_cut` find it over a stream of chunks with an exact radix select
(:func:`kth_largest`), so no pass holds a whole task vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import torch

from bench.errors import BenchError

#: whose rules a TIES-family method follows: the authors' code, FusionBench's or mergekit's (docs/fusion.md)
Convention = Literal["paper", "fusionbench", "mergekit"]
#: a restartable stream of magnitude chunks: each call yields the chunks again, in flat-index order
Mags = Callable[[], Iterable[torch.Tensor]]


# ---------------------------------------------------------------------------------------------- fractions, counts

def floor_times(x: float, n: int) -> int:
    """⌊x·n⌋ in integer arithmetic, reading x as the decimal it prints as (0.28 is 28/100, not the nearest double).

    The libraries compute ``int(x * n)`` in float64, which is the same number except where the product of the
    doubles lands just below an integer: ``int(0.29 * 100)`` is 28.

        >>> floor_times(0.28, 86_000_000), floor_times(0.29, 100), int(0.29 * 100)
        (24080000, 29, 28)
    """
    f = Fraction(str(x))
    return f.numerator * n // f.denominator


def keep_count(k: float, d: int, convention: Convention) -> int:
    """How many of ``d`` magnitudes a TIES trim with fraction ``k`` keeps, before entries tied at the threshold.

    * ``paper``, ``fusionbench``: the paper's ``topk_values_mask`` keeps |τ| ≥ ``kthvalue(d − ⌊k·d⌋)``, i.e. the
      (⌊k·d⌋ + 1)-th largest magnitude and everything tied with it: ⌊k·d⌋ + 1 entries (capped at d; at k = 1 the
      libraries call ``kthvalue(0)`` and fail, bench keeps all d);
    * ``mergekit``: ``sparsify.magnitude`` keeps exactly max(1, ⌊k·d⌋) entries (all d when k ≥ 1).

        >>> keep_count(0.28, 86_000_000, "paper"), keep_count(0.28, 86_000_000, "mergekit")
        (24080001, 24080000)
    """
    if k >= 1:
        return d
    if convention == "mergekit":
        return max(1, floor_times(k, d))
    return min(d, floor_times(k, d) + 1)


def check_fraction(method: str, key: str, value: float) -> None:
    """A fraction kept must be in (0, 1]; a value above 1 is almost surely a percentage: say so, with the fix."""
    if value > 1:
        fix = f": use {key}={float(Fraction(str(value)) / 100):g}" if value <= 100 else ""
        raise BenchError(f"fusion {method!r}: {key}={value:g} looks like a percentage; {key} is the fraction of "
                         f"entries kept, in (0, 1] (as in FusionBench and mergekit){fix}")


# ---------------------------------------------------------------------------------------------- selections

@dataclass
class Cut:
    """A selection of entries by magnitude: those strictly above ``value`` (``top``) or strictly below it, plus the
    first ``quota`` entries equal to ``value`` in flat-index order (``quota`` None: all of them).

    ``before[s]`` counts the entries equal to ``value`` in the chunks before the one starting at flat offset s, so a
    chunk can tell which of its ties fall within the quota without seeing the others.
    """

    value: float
    top: bool = True
    quota: int | None = None
    before: dict[int, int] = field(default_factory=dict)

    def select(self, mags: torch.Tensor, offset: int = 0) -> torch.Tensor:
        beyond = mags > self.value if self.top else mags < self.value
        eq = mags == self.value
        if self.quota is None:
            return beyond | eq
        rank = eq.cumsum(0) + self.before[offset]  # 1-based rank of each tie in flat order
        return beyond | (eq & (rank <= self.quota))

    @classmethod
    def everything(cls) -> Cut:
        return cls(-math.inf)

    @classmethod
    def nothing(cls) -> Cut:
        return cls(math.inf)


def top_cut(mags: Mags, n: int, keep: int, ties: Literal["all", "first"], offsets: Sequence[int] = (0,)) -> Cut:
    """The ``keep`` largest of ``n`` streamed magnitudes.

    ``ties="all"`` keeps every entry tied with the keep-th largest (the paper's ``>=``, so possibly more than
    ``keep``); ``ties="first"`` keeps exactly ``keep``, taking tied entries in flat-index order (what a stable
    descending argsort gives). ``offsets`` are the chunk starts of the stream (needed for ``first``).
    """
    if keep >= n:
        return Cut.everything()
    if keep <= 0:
        return Cut.nothing()
    t, above, equal = kth_largest_stats(mags, keep)
    if ties == "all" or keep - above == equal:
        return Cut(t)
    return Cut(t, quota=keep - above, before=_tie_prefix(mags, t, offsets))


def bottom_cut(mags: Mags, n: int, m: int, offsets: Sequence[int]) -> Cut:
    """The ``m`` smallest of ``n`` streamed magnitudes, tied entries taken in flat-index order (a stable ascending
    sort's first m)."""
    if m >= n:
        return Cut(math.inf, top=False)
    if m <= 0:
        return Cut(-math.inf, top=False)
    c, above, equal = kth_largest_stats(mags, n - m + 1)  # the m-th smallest is the (n − m + 1)-th largest
    quota = m - (n - above - equal)  # ties needed after every entry strictly below c
    if quota == equal:
        return Cut(c, top=False)
    return Cut(c, top=False, quota=quota, before=_tie_prefix(mags, c, offsets))


def _tie_prefix(mags: Mags, value: float, offsets: Sequence[int]) -> dict[int, int]:
    before, seen = {}, 0
    for s, m in zip(offsets, mags()):
        before[s] = seen
        seen += int((m == value).sum())
    return before


# ---------------------------------------------------------------------------------------------- radix select

def kth_largest(chunks: Mags, k: int) -> float:
    """The exact k-th largest of non-negative float32 values streamed as chunks (``chunks()`` restarts the stream).

    A non-negative float32 orders like its int32 bit pattern, so two 16-bit radix passes find it: a histogram of the
    high halves picks the bucket holding the k-th largest, a histogram of the low halves inside that bucket picks the
    value. Memory: two 65,536-bin histograms plus one chunk; no sort, no index tensor.

        >>> kth_largest(lambda: [torch.tensor([0.5, 3.0]), torch.tensor([2.0, 2.0, 1.0])], 3)
        2.0
    """
    return kth_largest_stats(chunks, k)[0] if k >= 1 else math.inf


def kth_largest_stats(chunks: Mags, k: int) -> tuple[float, int, int]:
    """(t, above, equal): the k-th largest value t, how many values are > t and how many are == t (1 ≤ k ≤ n).

        >>> kth_largest_stats(lambda: [torch.tensor([0.5, 3.0]), torch.tensor([2.0, 2.0, 1.0])], 3)
        (2.0, 1, 2)
    """
    bins = 1 << 16
    hist = torch.zeros(bins, dtype=torch.int64)
    for m in chunks():
        hist += torch.bincount((m.contiguous().view(torch.int32) >> 16).reshape(-1), minlength=bins)
    hi, k_in = _bucket(hist, k)
    hist.zero_()
    for m in chunks():
        b = m.contiguous().view(torch.int32).reshape(-1)
        hist += torch.bincount(b[(b >> 16) == hi] & 0xFFFF, minlength=bins)
    lo, rank = _bucket(hist, k_in)
    value = float(torch.tensor([(hi << 16) | lo], dtype=torch.int32).view(torch.float32))
    return value, k - rank, int(hist[lo])


def _bucket(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket that holds the k-th largest item, and that item's rank within the bucket (from the top)."""
    above = hist.flip(0).cumsum(0)  # above[j] = items in the top j + 1 buckets
    j = int(torch.searchsorted(above, torch.tensor(k)))
    if j >= len(hist):
        raise ValueError(f"kth_largest: k={k} exceeds the {int(above[-1])} values")
    return len(hist) - 1 - j, k - (int(above[j - 1]) if j > 0 else 0)
