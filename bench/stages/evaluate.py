"""The ``evaluate`` stage: metrics and predictions of a stored model (e.g. the fused one, before joint training),
cached like any stage; and the same for a model in memory, nothing stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.model import MultiTaskModel
from bench.stages.cache import run_stage
from bench.stages.context import Checkpoint, Outcome
from bench.stages.evaluation import Evaluation, evaluate_ckpt, evaluate_splits
from bench.stages.predictions import save_predictions

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages


def run_evaluate(stages: Stages, ckpt: Checkpoint) -> Outcome:
    """See :meth:`bench.stages.Stages.evaluate`."""

    def compute(folder: Path) -> dict[str, Any]:
        metrics, rate, kept = evaluate_ckpt(stages, ckpt, stages.eval_splits)
        folder.mkdir(parents=True, exist_ok=True)
        return {"metrics": metrics, "telemetry": rate, "predictions": save_predictions(folder, kept)}

    key = {"ckpt": ckpt.key, "precision": stages.ctx.train.precision,
           "max_eval_samples": stages.ctx.train.max_eval_samples}
    return run_stage(stages, "evaluate", key, ckpt.tasks, compute, model_at=ckpt)


def evaluate_model(stages: Stages, model: MultiTaskModel, splits: tuple[str, ...] | None = None) -> Evaluation:
    """See :meth:`bench.stages.Stages.evaluate_model`."""
    device = stages.device
    cfgs = [stages.ctx.task(t) for t in model.heads]
    return evaluate_splits(stages.ctx, model.to(device), cfgs, splits or stages.eval_splits, device)
