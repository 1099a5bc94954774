"""The training engine: one loop for single-task and joint training, its evaluation, and a loop for small fits.

* :mod:`~bench.engine.trainer`: :class:`Trainer`, the loop (best epoch on validation, resume after every epoch);
* :mod:`~bench.engine.state`: :class:`TrainState`, where a stage stands, typed;
* :mod:`~bench.engine.resume`: the resume files (safetensors + JSON, never a pickle);
* :mod:`~bench.engine.fitting`: :func:`optimise`, Adam over a few leaf tensors (learned fusion);
* :mod:`~bench.engine.evaluation`: per-task metrics on a split and the selection score;
* :mod:`~bench.engine.sampling`: which rows and tasks a step reads;
* :mod:`~bench.engine.telemetry`, :mod:`~bench.engine.compiled`: memory, phase times, ``train.compile`` accounting;
* :mod:`~bench.engine.logs`, :mod:`~bench.engine.console`: the trajectory, tracker scalars, progress output;
* :mod:`~bench.engine.device`: device, seeds, autocast.
"""

from __future__ import annotations

from bench.engine.compiled import CompiledForward, compile_events
from bench.engine.console import PROGRESS_INTERVAL_S, ProgressLines, live_bar, progress
from bench.engine.device import autocast, resolve_device, seed_everything, to_device
from bench.engine.evaluation import Data, evaluate, make_feeder, selection_score
from bench.engine.fitting import FitResult, optimise
from bench.engine.resume import FIT_RESUME_FILE, LEGACY_FIT_RESUME_FILE, LEGACY_RESUME_FILE, RESUME_FILE
from bench.engine.sampling import IndexStream, TaskSampler
from bench.engine.state import TrainState, Trajectory
from bench.engine.telemetry import MemoryMeter, PhaseTimer, peak_flops
from bench.engine.trainer import Trainer, TrainResult

_to, _autocast = to_device, autocast  # the names tests imported before the split

__all__ = [
    "FIT_RESUME_FILE", "LEGACY_FIT_RESUME_FILE", "LEGACY_RESUME_FILE", "PROGRESS_INTERVAL_S", "RESUME_FILE",
    "CompiledForward", "Data", "FitResult", "IndexStream", "MemoryMeter", "PhaseTimer", "ProgressLines",
    "TaskSampler", "TrainResult", "TrainState", "Trainer", "Trajectory", "autocast", "compile_events", "evaluate",
    "live_bar", "make_feeder", "optimise", "peak_flops", "progress", "resolve_device", "seed_everything",
    "selection_score", "to_device",
]
