"""Arithmetic fusion: ``mean``, ``weighted`` and ``task_arithmetic`` (with an optional DARE drop).

Each sees one tensor name at a time (see :mod:`bench.fusion.base`) and loops over the task tensors one by one, so its
working memory is a few tensors of that name, whatever N is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field

from bench.config import Frozen
from bench.errors import BenchError
from bench.fusion.base import FusionMethod, register_fusion, stream_mean, work_dtype
from bench.fusion.dare import DareMixin


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
