"""``joint_continue``: continue the previous model on every task served, the earlier ones from a rehearsal buffer.

Between ``sequential`` (no old data) and ``retrain`` (all old data, from θ0) (docs/dynamic_tasks.md): at every later
step the previous model trains on the arriving tasks' whole training sets and on a fixed ``rehearsal`` fraction of
each earlier task's (the same rows at every step and in every seed's strategies, chosen under the seed and the task),
so an epoch costs the new data plus the buffer. ``rehearsal=1`` continues on everything. Step 1 is ``retrain``'s
stage; a retired task's head is dropped and nothing is trained.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bench.config import Frozen
from bench.errors import BenchError
from bench.specs import WeightingSpec
from bench.strategy import Carry, ScheduleStrategy, TaskStep, register_strategy


class Params(Frozen):
    weighting: WeightingSpec = WeightingSpec("equal")
    weighting_params: dict[str, Any] = Field(default_factory=dict)
    rehearsal: float = Field(0.1, gt=0, le=1)  # the fraction of each earlier task's training examples kept


@register_strategy("joint_continue")
class JointContinue(ScheduleStrategy):
    """Each step: the previous model trained on the new tasks plus a rehearsal buffer of the earlier ones."""

    Params = Params
    colours = {"joint_continue": "#009E73"}  # Okabe-Ito bluish green
    families = {"joint_continue": "schedule"}
    uses_finetunes, own_checkpoints = False, 3

    def check_suite(self, params: Params, ctx) -> None:
        if ctx.suite.kind == "single_input" and params.rehearsal < 1:  # one example carries every task's label
            raise BenchError(f"strategy.rehearsal={params.rehearsal} keeps a part of each earlier task's own "
                             f"examples, but suite {ctx.suite.name!r} is single-input (its tasks share them); use "
                             "strategy.rehearsal=1 or a multi-input suite")

    def step(self, stages, params: Params, step: TaskStep, prev: Carry | None) -> Carry:
        if prev is None:
            return Carry(stages.joint(weighting=params.weighting))
        model = prev.model
        if step.arrived:
            old = {t: params.rehearsal for t in step.tasks if t not in step.arrived} if params.rehearsal < 1 else {}
            return Carry(stages.joint(init=model.ckpt, weighting=params.weighting, subset=old))
        return Carry(stages.assemble(model.ckpt, {t: model.ckpt for t in step.tasks}))  # a retirement only
