"""Per-task evaluation of a model on a split, and the validation score that selects the best epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.batches import BatchSpec, Feeder, auto_workers
from bench.config import TaskConfig
from bench.encode import EncodedSplit
from bench.engine.device import autocast, to_device
from bench.model import MultiTaskModel
from bench.tasks import task_kind

Data = dict[str, dict[str, EncodedSplit]]  # task -> split -> encoded


def selection_score(task_cfgs: dict[str, TaskConfig], val: dict[str, dict[str, float]]) -> float:
    """Mean primary validation metric, sign-flipped for lower-is-better metrics (used for best-epoch selection)."""
    vals = []
    for t, m in val.items():
        kind = task_kind(task_cfgs[t])
        vals.append(m[kind.primary] if kind.direction(kind.primary) == "max" else -m[kind.primary])
    return float(np.mean(vals))


def make_feeder(data: Data, collate, device: torch.device, workers: int | None) -> Feeder:
    """Workers as configured (``None``: :func:`~bench.batches.auto_workers`); pinned host memory when they feed a
    GPU, so the copy to the device overlaps the previous step."""
    n = auto_workers(device) if workers is None else workers
    return Feeder(data, collate, workers=n, pin=n > 0 and device.type == "cuda")


@torch.no_grad()
def evaluate(model: MultiTaskModel, tasks: list[TaskConfig], data: Data, split: str, batch_size: int,
             device: torch.device, precision: str, feeder: Feeder, keep: dict[str, dict[str, np.ndarray]] | None = None,
             fitted: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, dict[str, float]], int]:
    """Per-task metrics on ``split``; batches sorted by length so padding is minimal. Returns (metrics, samples).

    ``keep`` (optional) receives what each task's kind keeps per example, ``keep[task] = {"pred", "target", "id"}``
    (and ``"stats"`` for ratio-of-sums metrics) in the split's fixed order, so that intervals and paired tests can
    be computed later; for a kind with ``preview = K`` (dense maps) also the first K inputs, ``"preview_input"``,
    which the report's figure shows beside the kind's own ``preview_target`` / ``preview_pred``. ``fitted[task]``:
    what each kind chose on validation (a threshold); scoring validation (re)fills it, scoring another split reads
    it (:meth:`bench.tasks.TaskKind.calibrate`)."""
    fitted = {} if fitted is None else fitted
    model.eval()
    out, seen = {}, 0
    for task in tasks:
        es = data[task.name].get(split)
        if es is None:
            continue
        kind = task_kind(task)
        n = len(es)
        order = np.argsort(es.lengths, kind="stable") if es.lengths is not None else np.arange(n)
        # predictions stay on the device until the task is done: no host sync per batch
        pieces, shown = [], {}
        preview = min(int(getattr(kind, "preview", 0)), n)
        specs = [BatchSpec(task.name, split, order[s:s + batch_size]) for s in range(0, n, batch_size)]
        for spec, batch in feeder.run(specs):
            with autocast(device, precision):
                y = model(to_device(batch["inputs"], device), [task.name])[task.name]
            pieces.append((spec.idx, kind.predict(y)))
            if len(shown) < preview and "x" in batch["inputs"]:  # the inputs a dense figure shows beside its maps
                shown.update({int(i): batch["inputs"]["x"][j] for j, i in enumerate(spec.idx) if i < preview})
        seen += n
        target, pred = es.targets[task.name].numpy(), kind.assemble(pieces, n)
        if split == "validation":
            fitted[task.name] = kind.calibrate(target, pred)
        out[task.name], kept = kind.score(target, pred, fitted.get(task.name))
        if keep is not None:
            if len(shown) == preview > 0:
                kept = {**kept, "preview_input": torch.stack([shown[i] for i in range(preview)]).cpu().numpy()}
            keep[task.name] = kept
    return out, seen
