"""``retrain``: at every schedule step, joint training from θ0 on every task the step serves.

The upper reference of a changing task set (docs/dynamic_tasks.md): nothing is carried from one step to the next, so
nothing is forgotten, and each step pays for all of its tasks again (its cost grows with every step). Its joint
stage is ``naive_mtl``'s on the same tasks, so a step whose task set was trained before comes from the store.
``strategy.weighting=`` takes any registered weighting, as in ``naive_mtl``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bench.config import Frozen
from bench.specs import WeightingSpec
from bench.strategy import Carry, ScheduleStrategy, TaskStep, register_strategy


class Params(Frozen):
    weighting: WeightingSpec = WeightingSpec("equal")  # any registered weighting (bench list)
    weighting_params: dict[str, Any] = Field(default_factory=dict)


@register_strategy("retrain")
class Retrain(ScheduleStrategy):
    """Each step: joint training from θ0 on every task served so far (the upper reference)."""

    Params = Params
    colours = {"retrain": "#000000"}  # Okabe-Ito black: the reference every other schedule row is read against
    families = {"retrain": "schedule"}
    uses_finetunes, own_checkpoints = False, 2

    def step(self, stages, params: Params, step: TaskStep, prev: Carry | None) -> Carry:
        return Carry(stages.joint(weighting=params.weighting))
