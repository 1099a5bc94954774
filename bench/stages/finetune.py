"""The ``finetune`` stage: one copy of θ0 (or another checkpoint) trained on one task alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.specs import WeightingSpec
from bench.stages.cache import run_stage
from bench.stages.context import Checkpoint, Outcome
from bench.stages.keys import frozen_names, train_key
from bench.stages.models import build_model, freeze_backbone, sub_seed
from bench.stages.training import budget_steps, train_config, train_stage

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages


def run_finetune(stages: Stages, task: str, init: Checkpoint, share: float = 1.0, train: dict[str, Any] | None = None,
             freeze: str | list[str] | None = None) -> Outcome:
    """See :meth:`bench.stages.Stages.finetune`."""
    ctx = stages.ctx
    ctx.task(task)
    cfg = train_config(ctx, train, "finetune")
    steps = budget_steps(ctx, [task], share, 1, cfg.epochs)
    frozen = frozen_names(ctx.template, freeze)

    def compute(folder: Path) -> dict[str, Any]:
        seed = sub_seed(stages.seed, "finetune", task)
        model = build_model(ctx, [task], init, seed)
        freeze_backbone(model, frozen)
        alone = WeightingSpec.given("equal").build([ctx.task(task)])  # one task: its loss as it is
        return train_stage(stages, folder, model, [task], alone, seed, f"finetune {task} s{stages.seed}",
                           train=cfg, max_steps=steps)

    key = {"task": task, "init": init.key, "train": train_key(cfg),
           "data": ctx.data.task_fingerprints[task], "seed": stages.seed}
    if steps is not None:
        key["steps"] = steps
    if frozen:
        key["frozen"] = sorted(frozen)
    return run_stage(stages, "finetune", key, (task,), compute)
