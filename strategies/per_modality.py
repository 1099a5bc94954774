"""``per_modality``: one joint model per modality, every task scored by its modality's model, in one row.

A task's modality is its ``input`` kind (``text``, ``text_pair``, ``image``, ``image_text``, ...; an ``image_text``
task is a group of its own). Each group is trained jointly from θ0 like ``naive_mtl`` (the same weighting,
sampling, epochs and architecture parameters), on its own tasks only; a group of one task is that task's joint
training alone. So on a cross-modal suite ``separate`` (one model per task), ``per_modality`` (one per modality) and
``naive_mtl`` (one shared trunk for everything) differ only in how widely parameters are shared, and the
leaderboard's paired tests say per task whether sharing across modalities helped or hurt
(docs/cross_modal.md). On a suite of one modality it is ``naive_mtl``'s model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bench.specs import WeightingSpec, WithArchitecture
from bench.stages import Stages, make_row
from bench.strategy import Strategy, register_strategy


class Params(WithArchitecture):  # strategy.architecture=, strategy.architecture_params=
    weighting: WeightingSpec = WeightingSpec("equal")  # any registered weighting, in every group's joint stage
    weighting_params: dict[str, Any] = Field(default_factory=dict)
    sampling: Literal["proportional", "temperature", "round_robin", "all"] | None = None  # None: train.sampling
    epochs: int | None = Field(None, ge=1)  # None: train.epochs


def groups(stages: Stages) -> dict[str, list[str]]:
    """The suite's tasks by input kind, in suite order."""
    out: dict[str, list[str]] = {}
    for name in stages.task_names:
        out.setdefault(stages.ctx.task(name).input, []).append(name)
    return out


@register_strategy("per_modality")
class PerModality(Strategy):
    """One joint training from θ0 per modality (the tasks of one input kind); each task from its group's model."""

    Params = Params
    colours = {"per_modality": "#999999"}  # grey, beside the Okabe-Ito colours of the other strategies
    # no `families`: the row takes the family of its weighting, as naive_mtl's does
    uses_finetunes, own_checkpoints = False, 2  # for the free-space estimate (one model per modality)

    def run(self, stages: Stages, params: Params) -> dict:
        joints = [stages.joint(tasks=tasks, weighting=params.weighting, sampling=params.sampling,
                               epochs=params.epochs, architecture=params.architecture)
                  for tasks in groups(stages).values()]
        return {"per_modality": make_row(*joints)}
