"""Per-example predictions kept with every stage that evaluates: ``<stage folder>/predictions.npz``, with
``[split]/[task]/{pred,target,id}`` arrays (what ``bench report`` computes its intervals from)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.store import atomic_write

PREDICTIONS = "predictions.npz"


def save_predictions(folder: Path, kept: dict[str, dict[str, dict[str, np.ndarray]]]) -> dict[str, list[str]]:
    """Write (or extend) ``folder/predictions.npz`` with ``kept[split][task] = {pred, target, id}``; returns which
    splits and tasks the file holds."""
    path = folder / PREDICTIONS
    arrays: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as old:
            arrays.update({k: old[k] for k in old.files})
    for split, per_task in kept.items():
        for task, parts in per_task.items():
            for part, values in parts.items():
                arrays[f"{split}/{task}/{part}"] = values
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    held: dict[str, list[str]] = {}
    for k in sorted(arrays):
        split, task, _ = k.split("/")
        if task not in held.setdefault(split, []):
            held[split].append(task)
    return held
