"""Model Breadcrumbs (Davari & Belilovsky 2023): mask each tensor's outliers and smallest entries, then add."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from pydantic import Field

from bench.config import Frozen
from bench.fusion.base import FusionMethod, TensorSource, chunk_ranges, register_fusion, work_dtype
from bench.fusion.magnitude import Cut, bottom_cut, check_fraction, floor_times
from bench.fusion.ties import InMemory, _summed, disjoint_merge


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
