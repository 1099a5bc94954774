"""Per-task evaluation of a model on a split, and the validation score that selects the best epoch."""

from __future__ import annotations

import numpy as np
import torch

from bench import metrics as M
from bench.batches import BatchSpec, Feeder, auto_workers
from bench.config import TaskConfig
from bench.encode import EncodedSplit
from bench.engine.device import autocast, to_device
from bench.model import MultiTaskModel, predict

Data = dict[str, dict[str, EncodedSplit]]  # task -> split -> encoded


def selection_score(task_cfgs: dict[str, TaskConfig], val: dict[str, dict[str, float]]) -> float:
    """Mean primary validation metric, sign-flipped for lower-is-better metrics (used for best-epoch selection)."""
    vals = []
    for t, m in val.items():
        p = task_cfgs[t].primary_metric
        vals.append(m[p] if M.direction(p) == "max" else -m[p])
    return float(np.mean(vals))


def make_feeder(data: Data, collate, device: torch.device, workers: int | None) -> Feeder:
    """Workers as configured (``None``: :func:`~bench.batches.auto_workers`); pinned host memory when they feed a
    GPU, so the copy to the device overlaps the previous step."""
    n = auto_workers(device) if workers is None else workers
    return Feeder(data, collate, workers=n, pin=n > 0 and device.type == "cuda")


@torch.no_grad()
def evaluate(model: MultiTaskModel, tasks: list[TaskConfig], data: Data, split: str, batch_size: int,
             device: torch.device, precision: str, feeder: Feeder, keep: dict[str, dict[str, np.ndarray]] | None = None,
             ) -> tuple[dict[str, dict[str, float]], int]:
    """Per-task metrics on ``split``; batches sorted by length so padding is minimal. Returns (metrics, samples).

    ``keep`` (optional) receives the per-example predictions and targets, ``keep[task] = {"pred", "target", "id"}``
    in the split's fixed order, so that intervals and paired tests can be computed later."""
    model.eval()
    out, seen = {}, 0
    for task in tasks:
        es = data[task.name].get(split)
        if es is None:
            continue
        n = len(es)
        order = np.argsort(es.lengths, kind="stable") if es.lengths is not None else np.arange(n)
        # predictions stay on the device until the task is done: no host sync per batch
        preds = torch.empty(n, dtype=torch.float32 if task.target == "regression" else torch.int64, device=device)
        specs = [BatchSpec(task.name, split, order[s:s + batch_size]) for s in range(0, n, batch_size)]
        for spec, batch in feeder.run(specs):
            with autocast(device, precision):
                y = model(to_device(batch["inputs"], device), [task.name])[task.name]
            preds[torch.from_numpy(spec.idx).to(device)] = predict(task, y).to(preds.dtype)
        seen += n
        p = preds.cpu().numpy().astype(np.float64 if task.target == "regression" else np.int64)
        y = es.targets[task.name].numpy()
        out[task.name] = M.compute(task.metric_names, y, p)
        if keep is not None:
            keep[task.name] = {"pred": p, "target": y, "id": np.arange(n, dtype=np.int64)}
    return out, seen
