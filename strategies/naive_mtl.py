"""``naive_mtl``: one model trained jointly on every task with equal weights.

Losses are **summed** (L = Σ_i L_i, every λ_i = 1), not averaged: with T tasks averaging would divide the effective
learning rate of the shared backbone by T under SGD, silently changing the comparison with ``separate``. On
multi-input suites each step draws one task (``train.sampling``: proportional by default), so the sum has one term.
``strategy.weights=[...]`` fixes a static λ vector instead (what ``bench search space=lambda`` tunes).

Two controls a reviewer asks for, as labelled rows:

* ``strategy.sampling=all``: one batch of every task in every step, the sampling GradNorm needs (so a GradNorm row
  can be told apart from its sampling);
* ``strategy.epochs=2E`` (E = ``train.epochs``): the samples ``fuse_then_joint`` sees (fine-tunes + joint phase).

Under ``budget.match=samples|steps`` the joint phase gets the whole reference budget and ``epochs`` is ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bench.config import Frozen
from bench.errors import BenchError
from bench.stages import Stages, make_row
from bench.strategy import Strategy, register_strategy


class Params(Frozen):
    weights: list[float] | None = None  # static λ, one per task in suite order; None: equal (all 1)
    sampling: Literal["proportional", "temperature", "round_robin", "all"] | None = None  # None: train.sampling
    epochs: int | None = Field(None, ge=1)  # None: train.epochs


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
        how = {"sampling": params.sampling, "epochs": params.epochs}
        if params.weights is None:
            return {"naive_mtl": make_row(stages.joint(weighting="equal", **how))}
        joint = stages.joint(weighting="static", weighting_params={"weights": list(params.weights)}, **how)
        return {"naive_mtl": make_row(joint)}
