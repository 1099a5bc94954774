"""The fusion methods: ``mean``, ``weighted``, ``task_arithmetic``, ``ties``, ``dare_ties`` and ``breadcrumbs``.

All of them see one tensor name at a time (see :mod:`bench.fusion.base`) and loop over the task tensors one by one,
so their working memory is a few tensors of that name, whatever N is. τ_i = θ_i − θ0 is a task vector.

The TIES family follows one of three reference implementations (``convention``), each reproduced to float rounding
on the fixtures in ``tests/fixtures/fusion`` (made by ``scripts/make_fusion_fixtures.py`` with the real libraries);
docs/fusion.md tabulates what differs. Every "fraction kept" (TIES's ``k``, Breadcrumbs' ``density`` and ``gamma``)
is a fraction in (0, 1], as in FusionBench and mergekit, and keep counts are computed exactly: ⌊k·d⌋ reads k as
the decimal it prints as (k = 0.28, d = 86,000,000 gives 24,080,000, not one more or less).

Example:
    >>> import torch
    >>> from bench.fusion.base import build_fusion
    >>> a, b, base = torch.tensor([1.0, 3.0]), torch.tensor([3.0, 5.0]), torch.zeros(2)
    >>> build_fusion("mean", {}, n=2).fuse("w", base, [a, b]).tolist()
    [2.0, 4.0]
    >>> build_fusion("weighted", {"weights": [3, 1]}, n=2).fuse("w", base, [a, b]).tolist()  # w = [.75, .25]
    [1.5, 3.5]
    >>> build_fusion("task_arithmetic", {"lam": 0.5}, n=2).fuse("w", base, [a, b]).tolist()
    [2.0, 4.0]

Methods return float64 (see :func:`bench.fusion.base.work_dtype`); :func:`fuse_files` casts back to the input dtype.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import torch
from pydantic import Field

from bench.config import Frozen
from bench.errors import BenchError
from bench.fusion.base import (
    FusionMethod,
    TensorSource,
    _name_of,
    chunk_ranges,
    register_fusion,
    stream_mean,
    work_dtype,
)

Convention = Literal["paper", "fusionbench", "mergekit"]


@register_fusion("mean")
class Mean(FusionMethod):
    """θ = (1/N) Σ_i θ_i (θ0 is not used)."""

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        return stream_mean(tensors)


class WeightedParams(Frozen):
    #: one non-negative weight per checkpoint, in task order; renormalised to sum 1 (so [2, 1, 1] = [.5, .25, .25])
    weights: list[float]


@register_fusion("weighted")
class Weighted(FusionMethod):
    """θ = Σ_i w_i θ_i with w on the simplex: w_i ≥ 0, given weights are divided by their sum.

    Renormalising (rather than requiring Σw = 1) lets a search propose any non-negative vector; the normalised
    weights are what :meth:`describe` reports.
    """

    Params = WeightedParams

    def validate(self) -> None:
        w = list(self.params.weights)
        if len(w) != self.n:
            raise BenchError(f"fusion 'weighted': weights {w} has {len(w)} values for {self.n} checkpoints; "
                             f"give one non-negative weight per task, e.g. weights={[1] * self.n}")
        bad = [x for x in w if not math.isfinite(x) or x < 0]
        if bad:
            raise BenchError(f"fusion 'weighted': weights {w} has negative or non-finite values {bad}; "
                             "weights must be >= 0 (they are renormalised to sum 1)")
        if sum(w) <= 0:
            raise BenchError(f"fusion 'weighted': weights {w} sum to 0; give at least one positive weight")
        self.weights = [x / sum(w) for x in w]

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        acc: torch.Tensor | None = None
        for wi, t in zip(self.weights, tensors):
            term = t.to(work_dtype(t)) * wi
            acc = term if acc is None else acc.add_(term)
        assert acc is not None
        return acc

    def describe(self) -> dict:
        return {"method": "weighted", "weights": self.weights}


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


# ---------------------------------------------------------------------------------------------- DARE

def hash_seed(seed: int, i: int, name: str, offset: int) -> int:
    """The seed of task ``i``'s DARE mask on the chunk of tensor ``name`` starting at flat ``offset``."""
    return zlib.crc32(f"{seed}:{i}:{name}:{offset}".encode())


#: mergekit's ``rescaled_masked_tensor``: below this L1 norm (before or after the drop) it does not rescale
L1_EPS = 1e-7


class DareMixin:
    """DARE (Yu et al. 2024) preprocessing of each τ_i: drop entries at random with probability p, rescale the rest.

    **Mask seed.** The mask of the chunk of tensor ``name`` that starts at flat ``offset`` comes from a fresh
    ``torch.Generator`` seeded with crc32(f"{seed}:{i}:{name}:{offset}") (:func:`hash_seed`), i the task index. So
    the same params give the same masks in every pass (TIES's threshold pass and its merge passes), in every run,
    whatever order tensors are visited in. A tensor of at most :data:`bench.fusion.base.CHUNK` entries is one chunk,
    offset 0: its mask is one draw from seed hash_seed(seed, i, name, 0), which the fixture script feeds to the
    libraries' global generator to compare masks exactly.

    **Draw and rescale** (``convention``; task_arithmetic always uses ``paper``):

    * ``paper``: keep where U ≥ p, U = ``torch.rand`` (uniform [0, 1)); τ̃ = keep·τ / (1 − p);
    * ``fusionbench``: keep where U > p (FusionBench's ``param_random_drop_``: ``rand_like(param) > p``), τ̃ = keep·τ
      / (1 − p);
    * ``mergekit``: keep = ``torch.bernoulli(full(1 − p))`` in float32 (mergekit's density = 1 − p), then the kept
      entries are rescaled so that each tensor keeps its L1 norm: τ̃ = keep·τ · ‖τ‖₁ / ‖keep·τ‖₁ (mergekit 0.1.5's
      ``rescale=True``, ``RescaleNorm.l1``; no rescale when either norm is below 1e-7). That is ≈ 1/(1 − p), not
      equal to it.
    """

    params: Any
    _l1_name: str | None = None
    _l1: list[float]

    def dare_convention(self) -> Convention:
        return getattr(self.params, "convention", "paper")

    def dropped(self, i: int, name: str, theta: torch.Tensor, base: torch.Tensor, offset: int) -> torch.Tensor:
        """τ_i on one chunk after the drop and the 1/(1 − p) rescale (mergekit: before its per-tensor L1 rescale)."""
        tau = theta.to(work_dtype(theta)) - base.to(work_dtype(theta))
        p = self.params.dare
        if p <= 0:
            return tau
        g = torch.Generator().manual_seed(hash_seed(self.params.seed, i, name, offset))
        conv = self.dare_convention()
        if conv == "mergekit":
            return tau.mul_(torch.bernoulli(torch.full(tau.shape, 1 - p, dtype=torch.float32), generator=g))
        u = torch.rand(tau.shape, generator=g)
        return tau.mul_(u > p if conv == "fusionbench" else u >= p).div_(1 - p)

    def task_vector(self, i: int, name: str, theta: torch.Tensor, base: torch.Tensor, offset: int) -> torch.Tensor:
        tau = self.dropped(i, name, theta, base, offset)
        if self.params.dare > 0 and self.dare_convention() == "mergekit":
            if self._l1_name != name:
                raise RuntimeError(f"DARE with convention='mergekit' rescales by the L1 norm of the whole tensor "
                                   f"{name!r}: call begin_tensor first (fuse_files does)")
            tau.mul_(self._l1[i])
        return tau

    def begin_dare(self, name: str, base: TensorSource, tasks: list[TensorSource]) -> None:
        """mergekit's per-tensor L1 rescale factors ‖τ_i‖₁ / ‖keep·τ_i‖₁, one streamed pass per task."""
        if self.params.dare <= 0 or self.dare_convention() != "mergekit":
            return
        self._l1 = []
        for i, src in enumerate(tasks):
            before = after = 0.0
            for s, e in chunk_ranges(base.numel(name)):
                th, b = src.flat(name, s, e), base.flat(name, s, e)
                before += float((th.to(work_dtype(th)) - b.to(work_dtype(th))).abs().sum())
                after += float(self.dropped(i, name, th, b, s).abs().sum())
            self._l1.append(1.0 if before < L1_EPS or after < L1_EPS else before / after)
        self._l1_name = name


class TaskArithmeticParams(Frozen):
    #: scaling λ of the summed task vectors (≈ 0.3 for 8 tasks in Ilharco et al.)
    lam: float = 0.3
    #: DARE drop probability applied to each τ_i first (0: off); kept entries are rescaled by 1/(1 − p)
    dare: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


@register_fusion("task_arithmetic")
class TaskArithmetic(DareMixin, FusionMethod):
    """θ = θ0 + λ Σ_i τ_i (Ilharco et al. 2023); λ = 0 gives θ0, λ = 1/N the mean.

    With ``dare`` = p > 0 each τ_i is DARE-dropped first (see :class:`DareMixin`, ``paper`` draw). mergekit's
    ``dare_linear`` differs in the draw and in rescaling by the L1 ratio instead of 1/(1 − p).
    """

    Params = TaskArithmeticParams
    needs_base = True

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        assert base is not None
        acc: torch.Tensor | None = None
        for i, t in enumerate(tensors):
            tau = self.task_vector(i, name, t, base, offset)
            acc = tau if acc is None else acc.add_(tau)
        assert acc is not None
        return base.to(acc.dtype) + self.params.lam * acc


# ---------------------------------------------------------------------------------------------- selection by magnitude

Mags = Callable[[], Iterable[torch.Tensor]]


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


# ---------------------------------------------------------------------------------------------- TIES

class TiesParams(Frozen):
    #: fraction of each task vector's entries kept by magnitude, in (0, 1] (0.2 = the top 20 %)
    k: float = Field(0.2, gt=0)
    #: scaling λ applied to the merged task vector, after the disjoint mean
    lam: float = 1.0
    #: whose rules: the TIES authors' code, FusionBench 0.2.33's TiesMergingAlgorithm, or mergekit 0.1.5's ``ties``
    convention: Convention = "paper"
    #: disjoint mean or disjoint sum of the agreeing entries; None: the convention's default (see Ties.MERGE)
    merge: Literal["mean", "sum"] | None = None
    #: DARE drop probability applied to each τ_i before the trim (0: off); dare_ties is ties with this set
    dare: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


@register_fusion("ties")
class Ties(DareMixin, FusionMethod):
    """TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint merge; θ = θ0 + λ·τ_m.

    1. **Trim** each τ_i to its largest magnitudes (compared in float32, as the libraries do on float32 models):
       * ``paper`` / ``fusionbench``: over the whole flattened task vector (every fused float tensor; buffers and
         integer tensors excluded), keep |τ_i| ≥ t_i with t_i the (⌊k·d⌋ + 1)-th largest magnitude: ⌊k·d⌋ + 1 entries,
         plus every entry tied at t_i (:func:`keep_count`);
       * ``mergekit``: within each tensor, exactly max(1, ⌊k·numel⌋) entries; among entries tied at the cut the lowest
         flat indices are kept (see docs/fusion.md: mergekit's unstable argsort picks the same ones on tensors of at
         most 16 entries or when no non-zero magnitudes tie at the cut, and an unspecified subset otherwise).
    2. **Elect** γ = sign(Σ_i τ̂_i). Where the sum is exactly 0:
       * ``paper`` / ``fusionbench``: γ = the majority sign, sign(Σ_entries γ) over the whole task vector (then, as in
         the paper's ``disjoint_merge``, γ ≤ 0 selects the negative entries);
       * ``mergekit``: γ = +1 (``get_mask``: Σ ≥ 0 → +1).
    3. **Disjoint merge** over the tasks whose τ̂_i has the sign γ (zeros never count): their mean (``merge="mean"``),
       or their sum (``"sum"``). Default (:attr:`MERGE`): mean for ``paper`` (the authors' ``dis-mean``) and
       ``mergekit`` (``normalize=True``: divide by the summed weights of agreeing entries, weights 1), sum for
       ``fusionbench`` (its shipped config's ``merge_func: sum``; with ``merge="mean"`` it is exactly ``paper``).
    4. θ = θ0 + λ·τ_m: λ (FusionBench's ``scaling_factor``, mergekit's ``lambda``) scales after the merge.

    FusionBench copies the paper's ``topk_values_mask``/``resolve_sign``/``disjoint_merge`` verbatim, so
    ``fusionbench`` differs from ``paper`` only in that default merge. Both libraries compute in the checkpoint's
    dtype (float32 on the fixtures), bench in float64: outputs agree to ~1e-7.

    The thresholds are found exactly by a streaming radix select (:func:`kth_largest`), one chunk at a time: no pass
    holds a whole task vector, so global trimming costs reads, not memory.

    Example (mergekit, per tensor, k = 0.5, λ = 1):
        >>> import torch
        >>> ties = Ties(TiesParams(k=0.5, convention="mergekit"), n=2)
        >>> base = torch.zeros(4)
        >>> ties.fuse("w", base, [torch.tensor([3., -1., 2., 0.5]), torch.tensor([-1., -2., 4., 0.])]).tolist()
        [3.0, -2.0, 3.0, 0.0]
    """

    Params = TiesParams
    needs_base = True
    #: the disjoint merge each convention's library uses by default
    MERGE: dict[str, str] = {"paper": "mean", "fusionbench": "sum", "mergekit": "mean"}

    def __init__(self, params: TiesParams | None = None, n: int = 1):
        super().__init__(params, n)
        self.global_cuts: list[Cut] | None = None  # set by prepare() (paper, fusionbench)
        self.zero_sign = 1.0 if self.params.convention == "mergekit" else None  # paper: the majority, from prepare()
        self._cuts: list[Cut] = []  # cuts of the tensor being fused
        self._cuts_name: str | None = None

    @property
    def is_global(self) -> bool:
        return self.params.convention != "mergekit"

    @property
    def merge_rule(self) -> str:
        return self.params.merge or self.MERGE[self.params.convention]

    def validate(self) -> None:
        check_fraction(_name_of(type(self)), "k", self.params.k)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "merge": self.merge_rule}

    # ---- passes before the merge
    def _mags(self, i: int, names: list[str], base: TensorSource, src: TensorSource) -> Mags:
        def gen() -> Iterable[torch.Tensor]:
            for k in names:
                for s, e in chunk_ranges(base.numel(k)):
                    yield self.task_vector(i, k, src.flat(k, s, e), base.flat(k, s, e), s).abs().float()
        return gen

    def prepare(self, names: list[str], base: TensorSource | None, tasks: list[TensorSource]) -> None:
        if not self.is_global:
            return
        assert base is not None
        d = sum(base.numel(k) for k in names)
        keep = keep_count(self.params.k, d, self.params.convention)
        self.global_cuts = [top_cut(self._mags(i, names, base, src), d, keep, "all") for i, src in enumerate(tasks)]
        # the paper's resolve_zero_signs: the majority sign is the sign of Σ γ over the whole task vector
        votes = 0
        for k in names:
            for s, e in chunk_ranges(base.numel(k)):
                trimmed = self._trimmed(k, base.flat(k, s, e), [src.flat(k, s, e) for src in tasks], s,
                                        self.global_cuts)
                votes += int(torch.sign(_summed(trimmed)).sum())
        self.zero_sign = float((votes > 0) - (votes < 0))

    def begin_tensor(self, name: str, base: TensorSource | None, tasks: list[TensorSource]) -> None:
        assert base is not None
        if self.is_global:
            if self.global_cuts is None:
                raise RuntimeError(f"ties with convention={self.params.convention!r} trims the whole task vector "
                                   "and needs prepare() (fuse_files calls it)")
            self._cuts = self.global_cuts
        else:
            self.begin_dare(name, base, tasks)
            numel = base.numel(name)
            keep = keep_count(self.params.k, numel, "mergekit")
            offsets = [s for s, _ in chunk_ranges(numel)]
            self._cuts = [top_cut(self._mags(i, [name], base, src), numel, keep, "first", offsets)
                          for i, src in enumerate(tasks)]
        self._cuts_name = name

    # ---- the merge, one chunk at a time
    def _trimmed(self, name: str, base: torch.Tensor, tensors: Sequence[torch.Tensor], offset: int,
                 cuts: list[Cut]) -> Callable[[], Iterable[torch.Tensor]]:
        def gen() -> Iterable[torch.Tensor]:
            for i, t in enumerate(tensors):
                tau = self.task_vector(i, name, t, base, offset)
                yield tau.mul_(cuts[i].select(tau.abs().float(), offset))
        return gen

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        assert base is not None
        if self._cuts_name != name:  # a direct call on whole in-memory tensors (fuse_files calls begin_tensor)
            if self.is_global:
                raise RuntimeError(f"ties with convention={self.params.convention!r} trims the whole task vector "
                                   "and needs prepare() (fuse_files calls it)")
            if offset != 0:
                raise RuntimeError("a direct call of fuse needs whole tensors (offset 0); fuse_files streams chunks")
            self.begin_tensor(name, InMemory(base), [InMemory(t) for t in tensors])
        assert self.zero_sign is not None
        merged = disjoint_merge(self._trimmed(name, base, tensors, offset, self._cuts), self.zero_sign,
                                self.merge_rule)
        return base.to(merged.dtype) + self.params.lam * merged


def _summed(tensors: Callable[[], Iterable[torch.Tensor]]) -> torch.Tensor:
    total: torch.Tensor | None = None
    for t in tensors():
        total = t if total is None else total.add_(t)
    assert total is not None
    return total


def disjoint_merge(trimmed: Callable[[], Iterable[torch.Tensor]], zero_sign: float, merge: str) -> torch.Tensor:
    """TIES's elect and disjoint-merge steps on one chunk (``trimmed()`` restarts the stream of the N trimmed τ̂_i).

    γ = sign(Σ_i τ̂_i), ``zero_sign`` where that sum is 0; τ_m = Σ_{i: τ̂_i agrees with γ} τ̂_i, divided by the
    number of agreeing tasks (at least 1) for ``merge="mean"``. "Agrees" is the paper's ``torch.where(γ > 0, τ̂ > 0,
    τ̂ < 0)``, which is mergekit's ``sign(τ̂) == γ`` for γ = ±1.
    """
    elected = torch.sign(_summed(trimmed))
    elected.masked_fill_(elected == 0, zero_sign)
    positive = elected > 0
    num = torch.zeros_like(elected)
    cnt = torch.zeros_like(elected)
    for tr in trimmed():
        agree = torch.where(positive, tr > 0, tr < 0)
        num.add_(tr * agree)
        cnt.add_(agree)
    return num.div_(cnt.clamp_(min=1)) if merge == "mean" else num


class InMemory:
    """A :class:`TensorSource` stand-in over one in-memory tensor, for direct calls of ``fuse`` on whole tensors."""

    def __init__(self, t: torch.Tensor):
        self.t = t.reshape(-1)

    def flat(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.t[start:stop]

    def numel(self, name: str) -> int:
        return self.t.numel()


class DareTiesParams(TiesParams):
    #: DARE drop probability p (mergekit's density is 1 − p; FusionBench's sparsity_ratio is p)
    dare: float = Field(0.5, ge=0, lt=1)
    #: fraction kept by the magnitude trim after the drop; 1 = no trim (as mergekit's dare_ties; FusionBench trims)
    k: float = Field(1.0, gt=0)


@register_fusion("dare_ties")
class DareTies(Ties):
    """DARE then TIES (Yu et al. 2024): drop each entry of τ_i with probability p and rescale the rest, then
    (optionally) trim to the top k, elect signs and merge disjointly; θ = θ0 + λ·τ_m.

    The drop, its seed and its rescale are :class:`DareMixin`'s; the rest is :class:`Ties` under the same
    ``convention``. Reproduces:

    * ``fusionbench``: FusionBench 0.2.33's ``DareTiesMerging`` (``rand_like > p`` drop, ÷(1 − p), then the paper's
      global top-k trim with ``threshold`` = k and ``merge_func``, default sum);
    * ``mergekit``: mergekit 0.1.5's ``dare_ties`` (bernoulli(1 − p) drop, per-tensor L1 rescale, no magnitude trim,
      Σ ≥ 0 → +1, ``normalize=False`` by default: a disjoint *sum*; set ``merge="mean"`` for ``normalize: true``);
    * ``paper``: bench's own DARE draw (as task_arithmetic's) followed by the TIES authors' rules.

    With p = 0 it is exactly ``ties`` with the same k, convention and merge.
    """

    Params = DareTiesParams
    MERGE = {"paper": "mean", "fusionbench": "sum", "mergekit": "sum"}


# ---------------------------------------------------------------------------------------------- Model Breadcrumbs

class BreadcrumbsParams(Frozen):
    #: fraction of each tensor's entries kept, in (0, 1]; 1 turns the sparsification off (as in mergekit)
    density: float = Field(0.9, gt=0)
    #: fraction of each tensor's entries with the largest |τ| dropped as outliers (mergekit's default 0.01)
    gamma: float = Field(0.01, ge=0)
    #: scaling λ of the summed masked task vectors (task_arithmetic's default, so density=1 is task_arithmetic)
    lam: float = 0.3
    #: elect signs and keep only agreeing entries (a disjoint sum), as mergekit's ``breadcrumbs_ties``
    elect_sign: bool = False


@register_fusion("breadcrumbs")
class Breadcrumbs(FusionMethod):
    """Model Breadcrumbs (Davari & Belilovsky 2023): mask each tensor's outliers and its smallest entries, then
    task arithmetic: θ = θ0 + λ Σ_i m_i ⊙ τ_i.

    Per tensor of n entries, as mergekit 0.1.5's ``sparsify.magnitude_outliers``: with target = ⌊density·n⌋ and
    n_top = ⌊gamma·n⌋, drop the n_bot = max(0, n − target − n_top) smallest |τ| and keep the next ``target`` in
    ascending order, so the ``gamma`` fraction of largest entries goes (fewer when target + n_top > n: the density is
    kept). Ties at either boundary are taken in flat-index order (a stable ascending sort; mergekit's unstable sort
    agrees on tensors of at most 16 entries). ``density`` = 1 keeps everything, even with gamma > 0 (mergekit
    returns the tensor unchanged then). ``elect_sign`` adds TIES's election with Σ ≥ 0 → +1 and a disjoint sum
    (mergekit's ``breadcrumbs_ties``, ``normalize=False``).
    """

    Params = BreadcrumbsParams
    needs_base = True

    def __init__(self, params: BreadcrumbsParams | None = None, n: int = 1):
        super().__init__(params, n)
        self._keep: list[tuple[Cut, Cut]] = []  # (the n_bot + target smallest, the n_bot smallest) per task
        self._name: str | None = None

    def validate(self) -> None:
        check_fraction("breadcrumbs", "density", self.params.density)
        check_fraction("breadcrumbs", "gamma", self.params.gamma)

    def begin_tensor(self, name: str, base: TensorSource | None, tasks: list[TensorSource]) -> None:
        assert base is not None
        n = base.numel(name)
        offsets = [s for s, _ in chunk_ranges(n)]
        target, n_top = floor_times(self.params.density, n), floor_times(self.params.gamma, n)
        n_bot = max(0, n - target - n_top)
        self._keep = []
        for src in tasks:
            def mags(src: TensorSource = src) -> Iterable[torch.Tensor]:
                for s, e in chunk_ranges(n):
                    yield (src.flat(name, s, e).double() - base.flat(name, s, e).double()).abs().float()
            if self.params.density >= 1:
                self._keep.append((Cut.everything(), Cut(-math.inf, top=False)))
            else:
                self._keep.append((bottom_cut(mags, n, n_bot + target, offsets), bottom_cut(mags, n, n_bot, offsets)))
        self._name = name

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        assert base is not None
        if self._name != name:  # a direct call on whole in-memory tensors
            if offset != 0:
                raise RuntimeError("a direct call of fuse needs whole tensors (offset 0); fuse_files streams chunks")
            self.begin_tensor(name, InMemory(base), [InMemory(t) for t in tensors])

        def masked() -> Iterable[torch.Tensor]:
            for (upto, below), t in zip(self._keep, tensors):
                tau = t.to(work_dtype(t)) - base.to(work_dtype(t))
                mags = tau.abs().float()
                yield tau.mul_(upto.select(mags, offset) & ~below.select(mags, offset))

        merged = disjoint_merge(masked, 1.0, "sum") if self.params.elect_sign else _summed(masked)
        return base.to(merged.dtype) + self.params.lam * merged


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
