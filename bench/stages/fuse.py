"""The ``fuse`` stage: the backbones of several checkpoints fused into one (each task keeps its own head), by a
streaming method tensor by tensor or by a model-based one that may read data; and a streaming fusion in memory,
nothing written (what a fusion-weight search trial evaluates)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench import checkpoint as C
from bench.errors import BenchError
from bench.fusion import FusionJob, ModelFusion, fuse_files
from bench.fusion.base import fuse_state
from bench.model import MultiTaskModel
from bench.plugins.hashing import plugin_source
from bench.specs import FusionSpec
from bench.stages.cache import run_stage
from bench.stages.context import Checkpoint, Outcome
from bench.stages.models import build_model, heads_of, sub_seed

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages


def run_fuse(stages: Stages, parts: list[Checkpoint], base: Checkpoint, spec: FusionSpec) -> Outcome:
    """See :meth:`bench.stages.Stages.fuse`."""
    ctx = stages.ctx
    method, params = str(spec), dict(spec.raw)
    fusion = spec.build(len(parts))
    for p in parts:  # fusion averages trunks; an architecture's towers and experts have no counterpart to meet
        saved = C.arch_spec(p.path)
        if saved is not None:
            raise BenchError(f"fusion fuses hard-sharing trunks, but part {p.stage}[{','.join(p.tasks)}] was trained "
                             f"with architecture {saved['name']!r}; fuse the fine-tunes and train the architecture "
                             "after fusion (fuse_then_joint strategy.architecture=...)")
    tasks = tuple(t for p in parts for t in p.tasks)
    model_based = isinstance(fusion, ModelFusion)
    if model_based:
        fusion.check(ctx.template, [ctx.task(t) for t in tasks])

    def compute(folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        described = fusion.describe()
        summary = {"method": described.pop("method"), "params": described,
                   "transductive": bool(getattr(fusion.params, "transductive", False))}
        if model_based:
            t0 = time.perf_counter()
            job = FusionJob(stages, parts, base, folder)
            res = fusion.fuse_model(job)
            C.save_state(job.complete(res.state), folder / C.BACKBONE_FILE, sorted(job.buffers))
            stats = {**res.telemetry, "seconds": time.perf_counter() - t0}
            summary.update(res.info)
        else:
            stats = fuse_files(base.path / C.BACKBONE_FILE, [p.path / C.BACKBONE_FILE for p in parts], fusion,
                               folder / C.BACKBONE_FILE)
        C.save_state(heads_of(parts), folder / C.HEADS_FILE)
        return {"telemetry": {"fusion": stats}, "fusion": summary}

    key = {"parts": [p.key for p in parts], "base": base.key, "method": method, "params": params}
    source = plugin_source(type(fusion))
    if source:  # a fusion method from a plug-in folder: editing it invalidates what it fused
        key["fusion_source"] = source
        stages.plugins[f"fusion:{method}"] = source  # and the record names the version it used
    if model_based:  # what the data it reads depends on
        key.update({"data": {t: ctx.data.task_fingerprints[t] for t in tasks}, "seed": stages.seed,
                    "split": fusion.split, "precision": ctx.train.precision,
                    "samples": [ctx.train.max_train_samples, ctx.train.max_eval_samples]})
    return run_stage(stages, "fuse", key, tasks, compute)


def fused_model(stages: Stages, parts: list[Checkpoint], base: Checkpoint,
                spec: FusionSpec) -> tuple[MultiTaskModel, dict[str, Any]]:
    """See :meth:`bench.stages.Stages.fused_model`."""
    fusion = spec.build(len(parts))
    tasks = [t for p in parts for t in p.tasks]
    model = build_model(stages.ctx, tasks, None, sub_seed(stages.seed, "eval"))
    with torch.no_grad():  # fused straight into the model's own tensors: no state dict to copy
        _, _, stats = fuse_state(base.path / C.BACKBONE_FILE, [p.path / C.BACKBONE_FILE for p in parts], fusion,
                                 into=model.backbone.state_dict(keep_vars=False))
    model.heads.load_state_dict(heads_of(parts), strict=False)
    return model, stats
