"""Evaluating a model on the run's splits: metrics per split, the evaluation throughput, and the per-example
predictions every evaluating stage keeps."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from bench.config import TaskConfig
from bench.engine import evaluate, make_feeder
from bench.model import MultiTaskModel
from bench.stages.context import Checkpoint, SuiteContext
from bench.stages.models import build_model, sub_seed

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages

Evaluation = tuple[dict[str, Any], dict[str, float], dict[str, Any]]  # (metrics, throughput, predictions)


def evaluate_splits(ctx: SuiteContext, model: MultiTaskModel, cfgs: list[TaskConfig], splits,
                    device: torch.device) -> Evaluation:
    """Metrics per split, the evaluation throughput over all of them (samples/s; tokens/s for text), and the
    per-example predictions ``[split][task] = {pred, target, id}``."""
    train = ctx.train
    t0 = time.perf_counter()
    metrics, kept, n, fitted = {}, {}, 0, {}
    with make_feeder(ctx.encoded, ctx.pre.collate, device, train.num_workers) as feeder:
        # validation first: what a kind calibrates there (a threshold) is what test is scored with
        for split in sorted(splits, key=lambda s: s != "validation"):
            kept[split] = {}
            metrics[split], k = evaluate(model, cfgs, ctx.encoded, split, train.eval_batch_size, device,
                                         train.precision, feeder, keep=kept[split], fitted=fitted)
            n += k
    metrics, kept = {s: metrics[s] for s in splits}, {s: kept[s] for s in splits}  # in the order asked for
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = max(time.perf_counter() - t0, 1e-9)
    rate = {"eval_samples_per_s": n / seconds}
    lengths = [ctx.encoded[t.name][s].lengths for t in cfgs for s in splits if s in ctx.encoded[t.name]]
    if lengths and all(x is not None for x in lengths):
        rate["eval_tokens_per_s"] = sum(int(x.sum()) for x in lengths) / seconds
    return metrics, rate, kept


def evaluate_ckpt(stages: Stages, ckpt: Checkpoint, splits) -> Evaluation:
    """:func:`evaluate_splits` of the model stored in ``ckpt``, on the run's device."""
    tasks = list(ckpt.tasks)
    model = build_model(stages.ctx, tasks, ckpt, sub_seed(stages.seed, "eval"))
    device = stages.device
    model.to(device)
    cfgs = [stages.ctx.task(t) for t in tasks]
    return evaluate_splits(stages.ctx, model, cfgs, splits, device)
