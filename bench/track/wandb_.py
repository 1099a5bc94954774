"""``tracker=wandb``: one Weights & Biases run per computed stage, ``group=`` its cell, ``job_type=`` its stage.

Offline unless you are logged in: with no ``WANDB_MODE`` set, runs go to W&B when an API key is available
(``WANDB_API_KEY``, or the ``~/.netrc`` entry ``wandb login`` writes) and are written offline under
``results/<suite>/wandb/`` otherwise (``wandb sync results/<suite>/wandb/offline-run-*`` uploads them later). The
project is ``WANDB_PROJECT`` or ``bench-<suite>``; ``WANDB_DIR`` and ``WANDB_ENTITY`` are honoured.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from bench.track.base import StageRun, Tracker, register_tracker


def logged_in() -> bool:
    """Whether W&B has an API key here: ``WANDB_API_KEY``, or a ``.netrc`` entry for the W&B host (what ``wandb
    login`` writes; ``NETRC`` moves the file). Read without importing wandb or touching the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def mode() -> str:
    """``WANDB_MODE`` when set, else online when logged in, else offline."""
    return os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")


@register_tracker("wandb")
class WandB(Tracker):
    """Weights & Biases runs, group = cell; offline under results/<suite>/wandb/ unless logged in."""

    requires = ("wandb", "mtbench[wandb]")

    def start(self, run: StageRun) -> None:
        import wandb

        where = None if os.environ.get("WANDB_DIR") else run.root
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
        self.run: Any = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or f"bench-{run.suite}", group=run.group, job_type=run.stage,
            name=f"{run.group}/{run.name}", config=run.full_config(), dir=where, mode=mode(), reinit="create_new",
            tags=[run.stage], settings=wandb.Settings(console="off", silent=True))

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def finish(self, metrics: Mapping[str, float], ok: bool = True) -> None:
        if metrics:
            self.run.summary.update(dict(metrics))
        self.run.finish(exit_code=0 if ok else 1)
