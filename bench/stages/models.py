"""The models stages build: a copy of the suite's pristine backbone with a checkpoint's weights and seeded heads,
and the seeds they are built under (paired: seed s gives every stage of the same kind the same heads and batches)."""

from __future__ import annotations

import copy
import zlib
from typing import Any

import torch

from bench import checkpoint as C
from bench.architectures import build_architecture
from bench.engine import seed_everything
from bench.model import MultiTaskModel
from bench.stages.context import Checkpoint, SuiteContext
from bench.tasks import task_kind


def sub_seed(seed: int, *parts: str) -> int:
    """The seed of one use (``"joint"``, ``"finetune", task``, ...) under the cell's ``seed``."""
    return zlib.crc32("/".join([str(seed), *parts]).encode()) % 2**31


def build_model(ctx: SuiteContext, tasks: list[str], init: Checkpoint | None, seed: int,
                architecture: tuple[str, dict[str, Any]] | None = None) -> MultiTaskModel:
    """A model with ``init``'s backbone (the template's weights when None) and heads for ``tasks``: ``init``'s own
    where it has them, else fresh ones drawn under ``seed``.

    ``architecture`` (name, params): the modules between backbone and heads (:mod:`bench.architectures`); None:
    the one ``init`` was saved with (hard sharing when it has none). Its modules come from ``init`` when it was
    saved with the same architecture, else they are drawn fresh under ``seed`` (a joint stage on fused
    fine-tunes)."""
    seed_everything(seed)  # heads (and random backbones) start from the same weights for the same seed
    backbone = copy.deepcopy(ctx.template)
    saved = C.arch_spec(init.path) if init is not None else None
    name, params = architecture if architecture is not None else \
        ((saved["name"], saved["params"]) if saved is not None else ("hps", {}))
    cfgs = [ctx.task(t) for t in tasks]
    shapes = backbone.view_shapes() if hasattr(backbone, "view_shapes") else {}
    arch = build_architecture(name, dict(params), shapes, {t.name: task_kind(t) for t in cfgs})
    model = MultiTaskModel(backbone, cfgs, dropout=ctx.train.dropout, architecture=arch)
    if init is not None:
        backbone.load_state_dict(C.load_state(init.path / C.BACKBONE_FILE))
        heads_file = init.path / C.HEADS_FILE
        if heads_file.exists():
            heads = C.load_state(heads_file)
            own = {k: v for k, v in heads.items() if k.split(".")[0] in tasks}
            model.heads.load_state_dict(own, strict=False)
        if arch is not None and saved is not None and saved == {"name": name, "params": arch.params.model_dump(
                mode="json")}:
            arch.load_state_dict(C.load_state(init.path / C.ARCH_FILE), strict=False)  # towers of its tasks
    return model


def freeze_backbone(model: MultiTaskModel, names: set[str]) -> None:
    """Leave the backbone parameters ``names`` (:func:`bench.stages.keys.frozen_names`) untouched by training."""
    for name, p in model.backbone.named_parameters():
        if name in names:
            p.requires_grad_(False)


def heads_of(parts: list[Checkpoint]) -> dict[str, torch.Tensor]:
    """Each part's own task heads."""
    heads: dict[str, torch.Tensor] = {}
    for p in parts:
        for k, v in C.load_state(p.path / C.HEADS_FILE).items():
            if k.split(".")[0] in p.tasks:
                heads[k] = v
    return heads
