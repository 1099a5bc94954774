"""The ``joint`` stage: every task trained at once from θ0 (or another checkpoint) with a weighting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import BenchError
from bench.plugins.hashing import plugin_source
from bench.specs import WeightingSpec
from bench.stages.cache import run_stage
from bench.stages.context import Checkpoint, Outcome
from bench.stages.keys import frozen_names, train_key
from bench.stages.models import build_model, freeze_backbone, sub_seed
from bench.stages.training import budget_steps, train_config, train_stage

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages


def run_joint(stages: Stages, init: Checkpoint, tasks: list[str], weighting: WeightingSpec,
          share: float = 1.0, sampling: str | None = None,
          epochs: int | None = None, train: dict[str, Any] | None = None,
          freeze: str | list[str] | None = None, architecture: str = "hps",
          subset: dict[str, float] | None = None) -> Outcome:
    """See :meth:`bench.stages.Stages.joint`."""
    ctx = stages.ctx
    rows = rehearsal_rows(stages, subset or {})
    arch = (str(architecture), dict(getattr(architecture, "raw", {})))
    wp = dict(weighting.raw)
    w = weighting.build([ctx.task(t) for t in tasks])  # fail before any work; the stage trains with this one
    overrides = {**(train or {}), **{k: v for k, v in (("sampling", sampling), ("epochs", epochs))
                                     if v is not None}}
    train_cfg = train_config(ctx, overrides, "joint")
    all_tasks = w.needs_all_tasks or train_cfg.sampling == "all"
    steps = budget_steps(ctx, tasks, share, len(tasks) if all_tasks else 1, train_cfg.epochs)
    frozen = frozen_names(ctx.template, freeze)

    def compute(folder: Path) -> dict[str, Any]:
        # the weighting's name stays out of the seed: seed s gives every weighting the same heads and batches
        seed = sub_seed(stages.seed, "joint")
        model = build_model(ctx, tasks, init, seed, architecture=arch)
        freeze_backbone(model, frozen)
        return train_stage(stages, folder, model, tasks, w, seed, f"joint[{weighting}] s{stages.seed}",
                           train=train_cfg, max_steps=steps, train_rows=rows)

    key = {"tasks": tasks, "init": init.key, "weighting": weighting, "weighting_params": wp,
           "train": train_key(train_cfg), "data": {t: ctx.data.task_fingerprints[t] for t in tasks},
           "seed": stages.seed}
    source = plugin_source(type(w))
    if source:  # a weighting from a plug-in folder: editing it invalidates what it trained
        key["weighting_source"] = source
        stages.plugins[f"weighting:{weighting}"] = source  # and the record names the version it used
    if steps is not None:
        key["steps"] = steps
    if frozen:
        key["frozen"] = sorted(frozen)
    if subset:
        key["subset"] = {t: subset[t] for t in sorted(subset)}
    if arch != ("hps", {}):  # hard sharing keeps the keys it always had
        key["architecture"] = {"name": arch[0], "params": arch[1]}
    return run_stage(stages, "joint", key, tuple(tasks), compute)


def rehearsal_rows(stages: Stages, subset: dict[str, float]) -> dict[str, np.ndarray]:
    """Task -> the training rows a joint stage may draw: a fixed part (``subset[task]``, a fraction) of its training
    split, chosen under the cell's seed and the task alone, so a task keeps one rehearsal buffer at every later step
    and in every strategy (and at fraction 1 all of its rows)."""
    ctx, out = stages.ctx, {}
    for task, fraction in subset.items():
        ctx.task(task)
        if not 0 < fraction <= 1:
            raise BenchError(f"subset {task}={fraction} must be a fraction of its training examples in (0, 1]")
        if ctx.suite.kind == "single_input":
            raise BenchError(f"subset {task}={fraction}: a single-input suite's tasks share their examples; a "
                             "rehearsal subset needs a multi-input suite")
        n = len(ctx.encoded[task]["train"])
        rng = np.random.default_rng(sub_seed(stages.seed, "rehearsal", task))
        out[task] = np.sort(rng.permutation(n)[:max(1, round(fraction * n))])
    return out
