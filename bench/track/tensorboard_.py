"""``tracker=tensorboard``: event files under ``results/<suite>/tensorboard/<cell>/<stage>/``.

``tensorboard --logdir results/<suite>/tensorboard`` then shows one run per computed stage, named
``<label>_s<seed>_<cell>/<stage>[<task or method>]_<key>``; its regex filter selects a cell or a kind of stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from bench.track.base import StageRun, Tracker, register_tracker

FOLDER = "tensorboard"


@register_tracker("tensorboard")
class TensorBoard(Tracker):
    """TensorBoard event files under results/<suite>/tensorboard/<cell>/<stage>/."""

    requires = ("tensorboard", "mtbench[tensorboard]")

    def start(self, run: StageRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = run.root / FOLDER / run.group / run.name
        self.writer: Any = SummaryWriter(str(self.dir), flush_secs=10)
        self.last_step = 0
        # a YAML code block: the text tab renders it as written
        text = yaml.safe_dump(run.full_config(), sort_keys=False, default_flow_style=False)
        self.writer.add_text("config", f"```\n{text}```", global_step=0)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.last_step = max(self.last_step, step)

    def finish(self, metrics: Mapping[str, float], ok: bool = True) -> None:
        # final metrics as one point at the stage's last step (tags apart from the per-epoch curve's)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, global_step=self.last_step)
        if not ok:
            self.writer.add_text("status", "failed or interrupted", global_step=self.last_step)
        self.writer.close()
