"""``naive_mtl``: one model trained jointly on every task with equal weights.

Losses are **summed** (L = Σ_i L_i, every λ_i = 1), not averaged: with T tasks averaging would divide the effective
learning rate of the shared backbone by T under SGD, silently changing the comparison with ``separate``. On
multi-input suites each step draws one task (``train.sampling``: proportional by default), so the sum has one term.
``strategy.weights=[...]`` fixes a static λ vector instead (what ``bench search space=lambda`` tunes), and
``strategy.weighting=pcgrad`` (any registered weighting, loss or gradient level; ``bench list`` shows them) trains the
same joint model with another task balancer: ``strategy.weighting=pcgrad,mgda,upgrad`` is a sweep whose rows are
labelled by weighting. ``strategy.architecture=mtan`` (any registered architecture: ``hps``, the default, is one
shared trunk; ``mtan``, ``cross_stitch``, ``mmoe``, ``cgc``) puts modules of its own between the backbone and the
heads (docs/architectures.md). Gradient-level methods and most learned weightings need every task's loss in each
step, so on multi-input suites they draw one batch of every task per step (``sampling=all``).

Two controls a reviewer asks for, as labelled rows:

* ``strategy.sampling=all``: one batch of every task in every step, the sampling GradNorm needs (so a GradNorm row
  can be told apart from its sampling);
* ``strategy.epochs=2E`` (E = ``train.epochs``): the samples ``fuse_then_joint`` sees (fine-tunes + joint phase).

Under ``budget.match=samples|steps`` the joint phase gets the whole reference budget and ``epochs`` is ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bench.errors import BenchError
from bench.specs import WeightingSpec, WithArchitecture
from bench.stages import Stages, make_row
from bench.strategy import Strategy, register_strategy


class Params(WithArchitecture):  # strategy.architecture=, strategy.architecture_params=
    weighting: WeightingSpec = WeightingSpec("equal")  # any registered weighting (bench list), checked once
    weighting_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {c: 0.4} for cagrad
    weights: list[float] | None = None  # static λ, one per task in suite order (shorthand for weighting=static)
    sampling: Literal["proportional", "temperature", "round_robin", "all"] | None = None  # None: train.sampling
    epochs: int | None = Field(None, ge=1)  # None: train.epochs


@register_strategy("naive_mtl")
class NaiveMTL(Strategy):
    """Joint training from the pre-trained backbone with any weighting: equal (losses summed), static λ, PCGrad, ..."""

    Params = Params
    colours = {"naive_mtl": "#E69F00"}  # Okabe-Ito: colour-blind safe, fixed per strategy across plots
    # no `families`: a row takes the family of its weighting (naive_mtl[weighting=pcgrad]: gradient; plain: equal)
    uses_finetunes, own_checkpoints = False, 1  # for the free-space estimate

    @staticmethod
    def check(params: Params, tasks: list[str]) -> None:
        if params.weights is not None:
            if params.weighting not in ("equal", "static"):
                raise BenchError(f"strategy.weights is a static λ but strategy.weighting={params.weighting.name!r}; "
                                 "drop one of them")
            if len(params.weights) != len(tasks) or min(params.weights) < 0:
                raise BenchError(f"strategy.weights={params.weights} must be {len(tasks)} non-negative numbers, one "
                                 f"per task {tasks}")
            _weighting(params).check(tasks)
        # params.weighting was checked with the params (bench.specs); the plan checks it against the tasks

    def run(self, stages: Stages, params: Params) -> dict:
        joint = stages.joint(weighting=_weighting(params), sampling=params.sampling, epochs=params.epochs,
                             architecture=params.architecture)
        return {"naive_mtl": make_row(joint)}


def _weighting(params: Params) -> WeightingSpec:
    if params.weights is not None:
        return WeightingSpec.of("static", {"weights": list(params.weights)})
    return params.weighting
