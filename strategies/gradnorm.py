"""``gradnorm``: joint training from θ0 with GradNorm (Chen et al. 2018) balancing gradient norms at W."""

from __future__ import annotations

from bench.specs import WeightingSpec, WithArchitecture
from bench.stages import Stages, make_row
from bench.strategy import Strategy, register_strategy


class Params(WithArchitecture):  # strategy.architecture=, strategy.architecture_params=
    alpha: float = 1.5
    lr: float | None = None  # learning rate of the task weights w (None: GradNorm's default)
    last_shared_layer: str | None = None  # None: the backbone's declared last shared layer


@register_strategy("gradnorm")
class GradNorm(Strategy):
    """Joint training, task weights w (Σw = T) learned to equalise gradient norms at the last shared layer."""

    Params = Params
    colours = {"gradnorm": "#D55E00"}  # Okabe-Ito: colour-blind safe, fixed per strategy across plots
    families = {"gradnorm": "loss"}  # GradNorm weights the losses (Balancer.family), the only weighting it uses
    uses_finetunes, own_checkpoints = False, 1  # for the free-space estimate

    def run(self, stages: Stages, params: Params) -> dict:
        wp = {k: v for k, v in params.model_dump(include={"alpha", "lr", "last_shared_layer"}).items() if v is not None}
        joint = stages.joint(weighting=WeightingSpec.of("gradnorm", wp), architecture=params.architecture)
        return {"gradnorm": make_row(joint)}
