"""``sequential``: continue the previous model on the new tasks only.

What forgetting looks like (docs/dynamic_tasks.md): step 1 is joint training from θ0 on the first tasks (the very
stage ``retrain`` trains there); at every later step the previous model's backbone is trained on the arriving tasks
alone, and the earlier tasks keep their heads from the step that trained them, now reading a backbone that moved.
A retired task's head is dropped and nothing is trained. ``strategy.weighting=`` applies when a step adds several
tasks at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bench.config import Frozen
from bench.specs import WeightingSpec
from bench.strategy import Carry, ScheduleStrategy, TaskStep, register_strategy


class Params(Frozen):
    weighting: WeightingSpec = WeightingSpec("equal")
    weighting_params: dict[str, Any] = Field(default_factory=dict)


@register_strategy("sequential")
class Sequential(ScheduleStrategy):
    """Each step: the previous model trained on the new tasks only; old heads kept (measures forgetting)."""

    Params = Params
    colours = {"sequential": "#D55E00"}  # Okabe-Ito vermillion
    families = {"sequential": "schedule"}
    uses_finetunes, own_checkpoints = False, 3

    def step(self, stages, params: Params, step: TaskStep, prev: Carry | None) -> Carry:
        if prev is None:
            return Carry(stages.joint(weighting=params.weighting))
        model = prev.model
        if step.arrived:
            trained = stages.joint(init=model.ckpt, tasks=list(step.arrived), weighting=params.weighting)
            heads = {t: (trained.ckpt if t in step.arrived else model.ckpt) for t in step.tasks}
            return Carry(stages.assemble(trained.ckpt, heads))
        return Carry(stages.assemble(model.ckpt, {t: model.ckpt for t in step.tasks}))  # a retirement only
