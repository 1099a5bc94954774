"""What the two training stages (``finetune``, ``joint``) share: a stage's ``train`` settings, its number of
optimiser steps under ``budget.match``, and one training run that evaluates, saves and keeps its predictions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import checkpoint as C
from bench.config import TrainConfig, validated
from bench.engine import Trainer
from bench.model import MultiTaskModel
from bench.stages.context import SuiteContext
from bench.stages.evaluation import evaluate_splits
from bench.stages.predictions import save_predictions
from bench.weighting import Balancer

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages


def train_config(ctx: SuiteContext, train: dict[str, Any] | None, stage: str) -> TrainConfig:
    """The suite's ``train`` settings with a stage's own overrides, validated (one line on a bad key)."""
    if not train:
        return ctx.train
    return validated(TrainConfig, {**ctx.train.model_dump(), **train}, f"{stage}(train=...)")


def budget_steps(ctx: SuiteContext, tasks: list[str], share: float, per_step_tasks: int,
                 epochs: int) -> int | None:
    """Optimiser steps of a training stage under ``budget.match`` (None: train ``epochs`` epochs as usual).

    The reference is what naive MTL spends: one joint training over every task for ``train.epochs`` epochs,
    R steps of one batch. A stage on ``tasks`` receives ``share`` × R × the tasks' part of the data (their share
    of the training examples on multi-input suites, |tasks|/T on single-input ones), in samples (R × batch) or in
    steps, so T fine-tunes at share 1 add up to the reference, up to one batch per stage. ``per_step_tasks``:
    batches drawn per step (T when every task is in every step). A stage whose matched budget equals its own
    natural one keeps its natural cache entry."""
    match = ctx.suite.budget.match
    if match == "none":
        return None
    names = [t.name for t in ctx.tasks]
    cfg, enc, b = ctx.train, ctx.encoded, ctx.train.batch_size
    sizes = {t: len(enc[t]["train"]) for t in names}
    if ctx.suite.kind == "single_input":
        total, part, per_step = sizes[names[0]], len(tasks) / len(sizes), 1
        natural = epochs * math.ceil(total / b)
    else:
        total, part, per_step = sum(sizes.values()), sum(sizes[t] for t in tasks) / sum(sizes.values()), \
            per_step_tasks
        natural = epochs * math.ceil(sum(sizes[t] for t in tasks) / (b * per_step))
    reference = cfg.epochs * math.ceil(total / b)  # steps of one batch each
    steps = max(1, round(share * part * reference / (per_step if match == "samples" else 1)))
    return None if steps == natural else steps


def train_stage(stages: Stages, folder: Path, model: MultiTaskModel, tasks: list[str], w: Balancer, seed: int,
                desc: str, train: TrainConfig | None = None, max_steps: int | None = None,
                train_rows: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``tasks`` with the balancer ``w`` (built for these tasks by the stage that checked it) into
    ``folder`` (resumable there), evaluate it on the run's splits, save it and its predictions; returns the stage's
    info."""
    ctx = stages.ctx
    cfgs = [ctx.task(t) for t in tasks]
    trainer = Trainer(model, cfgs, ctx.encoded, w, train or ctx.train, seed, ctx.pre.collate,
                      ctx.suite.kind == "single_input", work_dir=folder, desc=desc,
                      on_epoch=stages.on_epoch, max_steps=max_steps,
                      on_log=stages.tracking.log if stages.tracking is not None else None, train_rows=train_rows)
    res = trainer.fit()
    metrics, rate, kept = evaluate_splits(ctx, model, cfgs, stages.eval_splits, trainer.device)
    res.telemetry.update(rate)
    C.save_model(model.cpu(), folder)
    return {"metrics": metrics, "best_epoch": res.best_epoch, "history": res.history,
            "trajectories": res.trajectories, "weights_label": w.weights_label, "telemetry": res.telemetry,
            "predictions": save_predictions(folder, kept)}
