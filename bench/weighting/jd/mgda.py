"""MGDA, the min-norm point of the convex hull of the task gradients, with an exact solver by default.

``solver=exact`` (the default) solves the small quadratic problem on the T × T Gramian exactly (Wolfe's active-set
algorithm, :mod:`bench.weighting.jd.min_norm`): the update is within 1e-6 of the min-norm point, relatively.
``solver=frank_wolfe`` is torchjd's MGDA (Sener & Koltun's Frank-Wolfe, ``epsilon`` and ``max_iters``, which only
it reads), kept for comparison: at its default ε = 1e-3 it stops several percent away from the min-norm point
(docs/weightings.md has the table). Either solver's calls that stop at their iteration cap are flagged
``not_converged`` (:meth:`bench.weighting.base.Balancer.flag`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from bench.weighting.base import Step, register_weighting
from bench.weighting.jd.adapter import JDAggregator, ViaParams, _aggregation

if TYPE_CHECKING:
    from torchjd import aggregation as A


@register_weighting("mgda")
class MGDA(JDAggregator):
    """MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of task gradients."""

    version = 2  # 2: the exact min-norm point by default (1 was torchjd's Frank-Wolfe): earlier cells recompute

    class Params(ViaParams):
        #: exact: Wolfe's active-set algorithm, to 1e-6 relative; frank_wolfe: torchjd's MGDA, as in the paper
        solver: Literal["exact", "frank_wolfe"] = "exact"
        epsilon: float = Field(1e-3, gt=0)  # Frank-Wolfe's stopping tolerance (solver=frank_wolfe only)
        max_iters: int = Field(100, ge=1)  # Frank-Wolfe's iteration cap (solver=frank_wolfe only)

    def make(self, n: int) -> A.Aggregator:
        # imports torchjd: at the first build, not when the CLI starts
        from bench.weighting.jd.min_norm import ExactMinNorm, FrankWolfe

        p = self.params
        solver = ExactMinNorm() if p.solver == "exact" else FrankWolfe(epsilon=p.epsilon, max_iters=p.max_iters)
        return _aggregation().GramianWeightedAggregator(solver)

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        super().backward(losses, step)
        # the aggregators used this step (the full one, or one of a subset of tasks) count the calls at their cap
        for agg in (self.agg, *self.__dict__.get("_subsets", {}).values()):
            if missed := agg.gramian_weighting.take_misses():
                self.flag("not_converged", missed)
