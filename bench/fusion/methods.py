"""The fusion methods: ``mean``, ``weighted``, ``task_arithmetic`` and ``ties`` (+ DARE as an option of the last two).

All of them see one tensor name at a time (see :mod:`bench.fusion.base`) and loop over the task tensors one by one,
so their working memory is a few tensors of that name, whatever N is. τ_i = θ_i − θ0 is a task vector.

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
from typing import Literal

import torch
from pydantic import Field

from bench.config import Frozen
from bench.errors import BenchError
from bench.fusion.base import (
    FusionMethod,
    TensorSource,
    chunk_ranges,
    register_fusion,
    stream_mean,
    work_dtype,
)


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


def hash_seed(seed: int, i: int, name: str, offset: int) -> int:
    return zlib.crc32(f"{seed}:{i}:{name}:{offset}".encode())


class DareMixin:
    """DARE (Yu et al. 2024) preprocessing: drop each entry of τ_i with probability p, rescale the rest by 1/(1−p).

    The mask of a chunk is drawn from a generator seeded by (seed, task index, tensor name, chunk offset), so it is
    the same in every pass (TIES's threshold pass and its merge passes) and does not depend on visiting order.
    """

    params: TaskArithmeticParams | TiesParams

    def task_vector(self, i: int, name: str, theta: torch.Tensor, base: torch.Tensor, offset: int) -> torch.Tensor:
        tau = theta.to(work_dtype(theta)) - base.to(work_dtype(theta))
        p = self.params.dare
        if p > 0:
            g = torch.Generator().manual_seed(hash_seed(self.params.seed, i, name, offset))
            keep = torch.rand(tau.shape, generator=g) >= p
            tau = tau.mul_(keep.to(tau.device)).div_(1 - p)
        return tau


class TaskArithmeticParams(Frozen):
    #: scaling λ of the summed task vectors (≈ 0.3 for 8 tasks in Ilharco et al.)
    lam: float = 0.3
    #: DARE drop probability applied to each τ_i first (0: off)
    dare: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


@register_fusion("task_arithmetic")
class TaskArithmetic(DareMixin, FusionMethod):
    """θ = θ0 + λ Σ_i τ_i (Ilharco et al. 2023); λ = 0 gives θ0, λ = 1/N the mean."""

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


class TiesParams(Frozen):
    #: percentage of each task vector's entries kept by magnitude (the paper's k)
    k: float = Field(20.0, gt=0, le=100)
    #: scaling λ applied to the merged task vector, after the disjoint mean
    lam: float = 1.0
    #: where the top-k % is taken: over the whole flattened task vector, or within each tensor
    scope: Literal["global", "per_tensor"] = "global"
    dare: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


@register_fusion("ties")
class Ties(DareMixin, FusionMethod):
    """TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean; θ = θ0 + λ·τ_m.

    1. **Trim**: keep the entries of τ_i with |τ_i| ≥ t_i, where t_i is the k-th largest magnitude and
       k = ⌈k% · d⌉. With ``scope="global"`` (default, as in the paper's code) d counts every fused entry of the task
       vector (all float parameters of the backbone, buffers excluded) and t_i is one number per task; with
       ``scope="per_tensor"`` (as mergekit) the top k % is taken within each tensor. Entries tied at the threshold
       are all kept, so at least k survive (the paper's code keeps ⌊k%·d⌋ + 1 through an off-by-one in
       ``kthvalue``; mergekit keeps exactly ⌊k%·d⌋, breaking ties by index order). Magnitudes are compared in float32.
    2. **Elect**: γ = sign(Σ_i trimmed τ_i) per entry; where the sum is exactly 0 the elected sign is 0 and the entry
       stays at θ0 (the paper's code substitutes the global majority sign there).
    3. **Disjoint mean**: τ_m = mean of the trimmed τ_i over the tasks whose entry is non-zero and has sign γ
       (0 where none does; a task that left an entry at 0 does not dilute the others).
    4. θ = θ0 + λ · τ_m: λ scales *after* the disjoint mean (default 1).

    t_i is found exactly by a streaming two-pass radix select (:func:`kth_largest`), one chunk at a time: no pass
    holds a whole task vector, so global trimming costs reads, not memory.

    Example (per tensor, k = 50 %, λ = 1):
        >>> import torch
        >>> ties = Ties(TiesParams(k=50, scope="per_tensor"), n=2)
        >>> base = torch.zeros(4)
        >>> ties.fuse("w", base, [torch.tensor([3., -1., 2., 0.5]), torch.tensor([-1., -2., 4., 0.])]).tolist()
        [3.0, -2.0, 3.0, 0.0]
    """

    Params = TiesParams
    needs_base = True

    def __init__(self, params: TiesParams | None = None, n: int = 1):
        super().__init__(params, n)
        self.global_thresholds: list[float] | None = None  # set by prepare() (global scope)
        self._thr: list[float] = []  # thresholds for the tensor being fused (set by begin_tensor)
        self._thr_name: str | None = None

    def prepare(self, names: list[str], base: TensorSource | None, tasks: list[TensorSource]) -> None:
        if self.params.scope != "global":
            return
        assert base is not None
        d = sum(base.numel(k) for k in names)
        self.global_thresholds = [
            kth_largest(self._mags(i, names, base, src), self.keep(d)) for i, src in enumerate(tasks)
        ]

    def begin_tensor(self, name: str, base: TensorSource | None, tasks: list[TensorSource]) -> None:
        if self.params.scope == "global":
            if self.global_thresholds is None:
                raise RuntimeError("ties with scope='global' needs prepare() (fuse_files calls it)")
            self._thr = list(self.global_thresholds)
        else:
            d = base.numel(name)
            self._thr = [kth_largest(self._mags(i, [name], base, src), self.keep(d)) for i, src in enumerate(tasks)]
        self._thr_name = name

    def keep(self, d: int) -> int:
        """How many entries of ``d`` the top k % is (at least 1)."""
        return min(d, max(1, math.ceil(self.params.k / 100 * d - 1e-9)))

    def threshold_of(self, tau: torch.Tensor) -> float:
        """t for one in-memory task vector (or tensor): its k-th largest magnitude."""
        mags = tau.abs().float()
        return kth_largest(lambda: [mags], self.keep(mags.numel()))

    def _mags(self, i: int, names: list[str], base: TensorSource, src: TensorSource
              ) -> Callable[[], Iterable[torch.Tensor]]:
        def gen() -> Iterable[torch.Tensor]:
            for k in names:
                for s, e in chunk_ranges(base.numel(k)):
                    yield self.task_vector(i, k, src.flat(k, s, e), base.flat(k, s, e), s).abs().float()
        return gen

    def trimmed(self, i: int, name: str, theta: torch.Tensor, base: torch.Tensor, offset: int,
                thr: list[float]) -> torch.Tensor:
        tau = self.task_vector(i, name, theta, base, offset)
        return tau.mul_(tau.abs().float() >= thr[i])  # float32, as the threshold: the k-th entry itself survives

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        assert base is not None
        if self._thr_name == name:  # fuse_files: thresholds from begin_tensor/prepare
            thr = self._thr
        elif self.params.scope == "global":
            raise RuntimeError("ties with scope='global' needs prepare() (fuse_files calls it)")
        else:  # direct use on whole in-memory tensors: the per-tensor thresholds come from this call
            thr = [self.threshold_of(self.task_vector(i, name, t, base, offset)) for i, t in enumerate(tensors)]
        # pass 1: elect the sign from the summed trimmed mass
        total: torch.Tensor | None = None
        for i, t in enumerate(tensors):
            tr = self.trimmed(i, name, t, base, offset, thr)
            total = tr if total is None else total.add_(tr)
        assert total is not None
        elected = torch.sign(total)
        del total
        # pass 2: mean over the non-zero trimmed entries that agree with the elected sign
        num = torch.zeros_like(elected)
        cnt = torch.zeros_like(elected)
        for i, t in enumerate(tensors):
            tr = self.trimmed(i, name, t, base, offset, thr)
            agree = (torch.sign(tr) == elected) & (tr != 0)
            num.add_(tr * agree)
            cnt.add_(agree)
        merged = num.div_(cnt.clamp_(min=1))
        return base.to(merged.dtype) + self.params.lam * merged


def kth_largest(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> float:
    """The exact k-th largest of non-negative float32 values streamed as chunks (``chunks()`` restarts the stream).

    A non-negative float32 orders like its int32 bit pattern, so two 16-bit radix passes find it: a histogram of the
    high halves picks the bucket holding the k-th largest, a histogram of the low halves inside that bucket picks the
    value. Memory: two 65,536-bin histograms plus one chunk; no sort, no index tensor.

        >>> kth_largest(lambda: [torch.tensor([0.5, 3.0]), torch.tensor([2.0, 2.0, 1.0])], 3)
        2.0
    """
    if k < 1:
        return math.inf
    bins = 1 << 16
    hist = torch.zeros(bins, dtype=torch.int64)
    for m in chunks():
        hist += torch.bincount((m.contiguous().view(torch.int32) >> 16).reshape(-1), minlength=bins)
    hi, k = _bucket(hist, k)
    hist.zero_()
    for m in chunks():
        b = m.contiguous().view(torch.int32).reshape(-1)
        hist += torch.bincount(b[(b >> 16) == hi] & 0xFFFF, minlength=bins)
    lo, _ = _bucket(hist, k)
    return float(torch.tensor([(hi << 16) | lo], dtype=torch.int32).view(torch.float32))


def _bucket(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket that holds the k-th largest item, and that item's rank within the bucket (from the top)."""
    above = hist.flip(0).cumsum(0)  # above[j] = items in the top j + 1 buckets
    j = int(torch.searchsorted(above, torch.tensor(k)))
    if j >= len(hist):
        raise ValueError(f"kth_largest: k={k} exceeds the {int(above[-1])} values")
    return len(hist) - 1 - j, k - (int(above[j - 1]) if j > 0 else 0)
