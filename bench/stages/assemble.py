"""The ``assemble`` stage: one checkpoint from the backbone of one and the task heads of others, nothing trained.

What a schedule strategy needs when it trains only some heads and keeps the rest (``sequential``: the new tasks'
heads and the backbone come from the step's training, the old heads from the previous model), or drops a retired
task's head. The architecture's modules (a non-``hps`` model) come with the backbone.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import checkpoint as C
from bench.errors import BenchError
from bench.stages.cache import run_stage
from bench.stages.context import Checkpoint, Outcome

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages


def run_assemble(stages: Stages, backbone: Checkpoint, heads: dict[str, Checkpoint]) -> Outcome:
    """See :meth:`bench.stages.Stages.assemble`."""
    for task, ckpt in heads.items():
        if task not in ckpt.tasks:
            raise BenchError(f"assemble: checkpoint {ckpt.stage}/{ckpt.key[:8]} has no head for task {task!r}; "
                             f"its tasks: {', '.join(ckpt.tasks)}")
    tasks = tuple(t for t in stages.ctx.suite.task_names if t in heads)

    def compute(folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        for name in (C.BACKBONE_FILE, C.ARCH_FILE, C.ARCH_SPEC):
            if (backbone.path / name).exists():
                shutil.copyfile(backbone.path / name, folder / name)
        state: dict[str, Any] = {}
        for task in tasks:
            own = C.load_state(heads[task].path / C.HEADS_FILE)
            state.update({k: v for k, v in own.items() if k.split(".")[0] == task})
        C.save_state(state, folder / C.HEADS_FILE)
        return {"telemetry": {"wall_time_s": 0.0}}

    key = {"backbone": backbone.key, "heads": {t: heads[t].key for t in tasks}}
    return run_stage(stages, "assemble", key, tasks, compute)
