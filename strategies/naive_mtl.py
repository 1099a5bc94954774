"""``naive_mtl``: one model trained jointly on every task with equal weights.

Losses are **summed** (L = Σ_i L_i, every λ_i = 1), not averaged: with T tasks averaging would divide the effective
learning rate of the shared backbone by T under SGD, silently changing the comparison with ``separate``. On
multi-input suites each step draws one task (``train.sampling``: proportional by default), so the sum has one term.
``strategy.weights=[...]`` fixes a static λ vector instead (what ``bench search space=lambda`` tunes).
"""

from __future__ import annotations

from bench.config import Frozen
from bench.errors import BenchError
from bench.stages import Stages, make_row
from bench.strategy import Strategy, register_strategy


class Params(Frozen):
    weights: list[float] | None = None  # static λ, one per task in suite order; None: equal (all 1)


@register_strategy("naive_mtl")
class NaiveMTL(Strategy):
    """Joint training from the pre-trained backbone, equal weights (losses summed) or a static λ."""

    Params = Params

    @staticmethod
    def check(params: Params, tasks: list[str]) -> None:
        if params.weights is not None and (len(params.weights) != len(tasks) or min(params.weights) < 0):
            raise BenchError(f"strategy.weights={params.weights} must be {len(tasks)} non-negative numbers, one per "
                             f"task {tasks}")

    def run(self, stages: Stages, params: Params) -> dict:
        if params.weights is None:
            return {"naive_mtl": make_row(stages.joint(weighting="equal"))}
        joint = stages.joint(weighting="static", weighting_params={"weights": list(params.weights)})
        return {"naive_mtl": make_row(joint)}
