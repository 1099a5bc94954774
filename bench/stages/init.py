"""The ``init`` stage: θ0, the backbone every fine-tune and joint run starts from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import checkpoint as C
from bench.backbones import build_backbone
from bench.engine import seed_everything
from bench.model import MultiTaskModel
from bench.stages.cache import run_stage
from bench.stages.context import Checkpoint
from bench.stages.models import sub_seed

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages


def run_init(stages: Stages) -> Checkpoint:
    """θ0 (seeded for randomly initialised backbones); its key holds the content hash of the weights as built."""
    ctx = stages.ctx

    def compute(folder: Path) -> dict[str, Any]:
        # build afresh under the seed: a randomly initialised backbone must not depend on what ran before
        seed_everything(sub_seed(stages.seed, "init"))
        backbone, _ = build_backbone(ctx.suite.backbone, ctx.tasks[0].input, ctx.sample)
        model = MultiTaskModel(backbone, [])
        C.save_model(model, folder)
        return {"telemetry": {"trainable_params": sum(p.numel() for p in model.backbone.parameters())}}

    key = {"backbone": ctx.suite.backbone.model_dump(), "seed": stages.seed,
           "input": ctx.tasks[0].input, "weights": ctx.weights_hash}
    out = run_stage(stages, "init", key, (), compute)
    assert out.ckpt is not None
    return out.ckpt
