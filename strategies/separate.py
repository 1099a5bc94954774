"""``separate``: one fine-tune per task from θ0; the baseline of Δm%."""

from __future__ import annotations

from bench.stages import Stages, make_row
from bench.strategy import NoParams, Strategy, register_strategy


@register_strategy("separate")
class Separate(Strategy):
    """One fine-tune per task from the pre-trained backbone (T models; the Δm% baseline)."""

    Params = NoParams
    colours = {"separate": "#000000"}  # Okabe-Ito: colour-blind safe, fixed per strategy across plots
    families = {"separate": "baseline"}  # the Δm% baseline: its own group in the figures
    uses_finetunes, own_checkpoints = True, 0  # for the free-space estimate

    def run(self, stages: Stages, params: NoParams) -> dict:
        tunes = [stages.finetune(task) for task in stages.task_names]
        return {"separate": make_row(*tunes)}
