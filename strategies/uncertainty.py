"""``uncertainty``: joint training from θ0 with Kendall et al. (2018) homoscedastic-uncertainty weighting."""

from __future__ import annotations

from bench.config import Frozen
from bench.stages import Stages, make_row
from bench.strategy import Strategy, register_strategy


class Params(Frozen):
    lr: float | None = None  # own learning rate for s_i = log σ_i² (None: the network's)


@register_strategy("uncertainty")
class Uncertainty(Strategy):
    """Joint training, λ from learned task uncertainty (s = log σ², form chosen per target kind)."""

    Params = Params

    def run(self, stages: Stages, params: Params) -> dict:
        wp = {"lr": params.lr} if params.lr is not None else {}
        return {"uncertainty": make_row(stages.joint(weighting="uncertainty", weighting_params=wp))}
