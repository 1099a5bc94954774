"""``uncertainty``: joint training from θ0 with Kendall et al. (2018) homoscedastic-uncertainty weighting.

Kendall et al. update the network from Σ_i (e^{−s_i} L_i + ½ s_i) over a batch of *every* task, so on multi-input
suites this strategy draws one batch of every task per step (``sampling=all``, the setting GradNorm uses too) unless
told otherwise. With one task per step the weight e^{−s_i} of the only loss of a step is removed by gradient clipping
and mostly by Adam (docs/budgets.md): the row would then be naive MTL whatever σ² learns. Compare it with
``naive_mtl strategy.sampling=all``, which sees the same batches at the same seed.

The learned s_i have their own learning rate (``strategy.lr``; default: the weighting's, 3e-2, chosen by experiment).
"""

from __future__ import annotations

from typing import Literal

from bench.specs import WeightingSpec, WithArchitecture
from bench.stages import Stages, make_row
from bench.strategy import Strategy, register_strategy


class Params(WithArchitecture):  # strategy.architecture=, strategy.architecture_params=
    lr: float | None = None  # own learning rate for s_i = log σ_i² (None: the weighting's default)
    sampling: Literal["proportional", "temperature", "round_robin", "all"] | None = "all"  # None: train.sampling


@register_strategy("uncertainty")
class Uncertainty(Strategy):
    """Joint training, λ from learned task uncertainty (s = log σ², form chosen per target kind)."""

    Params = Params
    colours = {"uncertainty": "#009E73"}  # Okabe-Ito: colour-blind safe, fixed per strategy across plots
    families = {"uncertainty": "loss"}  # the uncertainty weighting (Balancer.family), the only one it trains with
    uses_finetunes, own_checkpoints = False, 1  # for the free-space estimate

    def run(self, stages: Stages, params: Params) -> dict:
        wp = {"lr": params.lr} if params.lr is not None else {}
        joint = stages.joint(weighting=WeightingSpec.of("uncertainty", wp), sampling=params.sampling,
                             architecture=params.architecture)
        return {"uncertainty": make_row(joint)}
