"""The disk space a run needs, estimated before any training, and the one-line warning when the store's disk has
less free (a later out-of-space error quotes the estimate)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from bench.errors import StoreWarning
from bench.store.failures import fmt_bytes, free_bytes

# CPU-side sizes behind the estimate: each entry's marker, lock and file-system blocks; a record; one kept prediction
ENTRY_BYTES = 16_000
RECORD_BYTES = 32_000
PREDICTION_BYTES = 16  # prediction, target and id of one example, compressed
RESUME_FACTOR = 3  # a training stage's resume state: weights plus AdamW's two moments


def planned_stages(own_checkpoints: Sequence[int], finetunes: bool, n_tasks: int, seeds: int) -> tuple[int, int]:
    """``(checkpoints, evaluations)`` a plan adds at most: per seed θ0, the T fine-tunes when ``finetunes`` (shared
    by every strategy that uses them), and each variant's own checkpoints, ``own_checkpoints`` (what the strategy
    classes declare: ``Strategy.uses_finetunes``, ``Strategy.own_checkpoints``; the caller reads them). Every
    checkpoint but θ0 and a fusion keeps predictions, and so does the evaluate stage after a fusion.

    >>> planned_stages([0, 1], finetunes=True, n_tasks=5, seeds=2)  # separate and naive_mtl, 5 tasks, 2 seeds
    (14, 12)
    """
    per_seed_ckpt, per_seed_eval = 1, 0
    if finetunes:
        per_seed_ckpt, per_seed_eval = 1 + n_tasks, n_tasks
    for own in own_checkpoints:
        per_seed_ckpt += int(own)
        per_seed_eval += own  # a joint stage evaluates; a fusion doesn't, but its evaluate stage does
    return seeds * per_seed_ckpt, seeds * per_seed_eval


def estimate_bytes(model_bytes: int, checkpoints: int, evaluations: int = 0, eval_examples: int = 0,
                   cells: int = 0) -> int:
    """About how many bytes a run adds to the store (an upper bound rather than a lower one).

    ``model_bytes``: one checkpoint, backbone plus heads (:func:`bench.checkpoint.state_bytes`); ``checkpoints``
    and ``evaluations``: the stages that write weights and keep predictions (:func:`planned_stages`);
    ``eval_examples``: examples one evaluation predicts, summed over its tasks and splits; ``cells``: records. The
    training stage in progress also holds its resume state (weights and optimiser moments) until it finishes.

    >>> fmt_bytes(estimate_bytes(24_000, checkpoints=11, evaluations=10, eval_examples=4_800, cells=5))
    '1.6 MB'
    """
    return (checkpoints * (model_bytes + ENTRY_BYTES) + evaluations * (eval_examples * PREDICTION_BYTES + ENTRY_BYTES)
            + cells * RECORD_BYTES + RESUME_FACTOR * model_bytes)


def check_free_space(folder: Path, needed: int) -> str | None:
    """Compare the free space under ``folder`` (the results dir or a suite's store) with ``needed`` bytes (from
    :func:`estimate_bytes`) before training. When short, warn in one line and return the message (else None). The
    run keeps the estimate (:class:`bench.run_context.RunContext`), so a later out-of-space error quotes it."""
    folder = Path(folder).absolute()
    free = free_bytes(folder)
    if free is None or free >= needed:
        return None
    message = (f"{folder} has {fmt_bytes(free)} free and this run needs about {fmt_bytes(needed)} for its "
               f"checkpoints and predictions; it stops with a message when the disk fills (finished cells are kept). "
               f"Free space or give results_dir= another disk")
    warnings.warn(message, StoreWarning, stacklevel=2)
    return message
