"""Experiment trackers: ``tracker=tensorboard``, ``tracker=wandb``, ``tracker=mlflow``, or several at once
(``tracker=[tensorboard,mlflow]``). The user guide is docs/trackers.md.

Every stage a cell computes (not one read from the store) gets one run per tracker with its per-step losses (total
and per task), task weights λ, learning rate and throughput, its validation curve, its final metrics on every split,
and the resolved configuration; runs are grouped by cell. Trackers change no key and no result.
"""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError
from bench.track import mlflow_, tensorboard_, wandb_  # noqa: F401  (importing registers the built-in trackers)
from bench.track.base import (
    NO_RUN,
    TRACKERS,
    StageRun,
    Tracker,
    Tracking,
    final_scalars,
    register_tracker,
    track_stage,
)

__all__ = ["NO_RUN", "TRACKERS", "StageRun", "Tracker", "Tracking", "final_scalars", "register_tracker",
           "track_stage", "trackers_from"]


def trackers_from(value: Any, sweep: bool = False) -> list[str]:
    """The tracker names that ``tracker=<value>`` asks for, checked (registered, package installed), in order and
    without repeats; ``null`` or ``[]`` is none. A one-line ``BenchError`` otherwise. ``sweep``: the value was a
    comma list (``tracker=a,b``), which the grammar reads as a sweep, not as several trackers.

    Example (naming an installed tracker gives ``['tensorboard']``; the packages are an extra, so not shown here):
        >>> trackers_from(None)
        []
        >>> try:
        ...     trackers_from("tensorbord")
        ... except BenchError as e:
        ...     print(str(e).split(";")[0])
        unknown tracker 'tensorbord' (did you mean 'tensorboard'?)
    """
    if sweep:
        items = value if isinstance(value, list) else [value]
        raise BenchError(f"tracker={','.join(map(str, items))} is a sweep; to log to several trackers at once give a "
                         f"list: tracker=[{','.join(map(str, items))}]")
    if value is None or value == "none":
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise BenchError(f"tracker={value!r} must be a tracker name or a list of them, e.g. "
                         f"tracker=[tensorboard,mlflow]; valid: {', '.join(TRACKERS.names())}")
    names: list[str] = []
    for name in items:
        TRACKERS.get(name).check()
        if name not in names:
            names.append(name)
    return names
