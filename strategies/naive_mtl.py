"""``naive_mtl``: one model trained jointly on every task with equal weights.

Losses are **summed** (L = Σ_i L_i, every λ_i = 1), not averaged: with T tasks averaging would divide the effective
learning rate of the shared backbone by T under SGD, silently changing the comparison with ``separate``. On
multi-input suites each step draws one task (``train.sampling``: proportional by default), so the sum has one term.
"""

from __future__ import annotations

from bench.stages import Stages, make_row
from bench.strategy import NoParams, Strategy, register_strategy


@register_strategy("naive_mtl")
class NaiveMTL(Strategy):
    """Joint training from the pre-trained backbone, equal weights (losses summed)."""

    Params = NoParams

    def run(self, stages: Stages, params: NoParams) -> dict:
        return {"naive_mtl": make_row(stages.joint(weighting="equal"))}
