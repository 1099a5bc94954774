"""Cache plumbing shared by every stage: a stage's folder is ``stages/<stage>/<hash of its key>/``; a finished
and sound one is reused, else the stage is computed under the entry's lock and its ``stage.json`` written last."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import distributed
from bench.engine import LEGACY_RESUME_FILE, RESUME_FILE
from bench.stages.context import Checkpoint, Outcome
from bench.stages.evaluation import evaluate_ckpt
from bench.stages.keys import STAGE_VERSION, STAGE_VERSIONS
from bench.stages.predictions import save_predictions
from bench.store import STAGE_MARKER, Store, content_hash, now_iso, provenance, read_json, write_json
from bench.track.base import track_stage

if TYPE_CHECKING:  # annotations only: the class delegates to this module
    from bench.stages.base import Stages

Compute = Callable[[Path], dict[str, Any]]


def run_stage(stages: Stages, stage: str, key_obj: dict[str, Any], tasks: tuple[str, ...], compute: Compute,
              version: int | None = None, model_at: Checkpoint | None = None) -> Outcome:
    """The stage's outcome: read from the store when finished there, else computed by ``compute(folder)``.
    ``model_at``: where the stage's model lives when not in its own folder (an evaluate stage's input), for
    evaluating the splits a cached stage lacks. Every outcome joins ``stages.outcomes`` (what a schedule step
    counts as its cost)."""
    out = _run_stage(stages, stage, key_obj, tasks, compute, version, model_at)
    stages.outcomes.append(out)
    return out


def _run_stage(stages: Stages, stage: str, key_obj: dict[str, Any], tasks: tuple[str, ...], compute: Compute,
               version: int | None, model_at: Checkpoint | None) -> Outcome:
    version = STAGE_VERSIONS.get(stage, STAGE_VERSION) if version is None else version
    key = content_hash({"stage": stage, "v": version, **key_obj})
    store = stages.store
    folder = store.stage_dir(stage, key)
    ckpt = Checkpoint(stage, key, folder, tasks)
    # force=true recomputes a stage once per run: a fine-tune that separate just retrained serves fuse_then_joint
    fresh = f"{stage}/{key}" in stages.log.computed
    reusable = lambda: store.done(folder) and (not stages.force or fresh)
    world = distributed.current()
    if world.size > 1:  # procs=N: the ranks decide together (rank 0's view of the store), then rank 0 writes
        if not distributed.agree(reusable()):
            if not world.writer:
                aside = world.scratch / stage / key
                return Outcome(Checkpoint(stage, key, aside, tasks),
                               _compute_aside(stages, stage, key, key_obj, tasks, folder, aside, compute))
            with store.lock(folder):
                return Outcome(ckpt, _compute(stages, stage, key, key_obj, tasks, folder, compute, version))
    elif not reusable():
        with store.lock(folder):
            if not reusable():  # else another process finished it while we waited
                return Outcome(ckpt, _compute(stages, stage, key, key_obj, tasks, folder, compute, version))
    stages.log.reused.append(f"{stage}/{key}")
    return _complete(stages, Outcome(ckpt, read_json(folder / STAGE_MARKER), reused=True), model_at)


def _compute(stages: Stages, stage: str, key: str, key_obj: dict[str, Any], tasks: tuple[str, ...], folder: Path,
             compute: Compute, version: int) -> dict[str, Any]:
    """Run ``compute`` into ``folder`` (locked by the caller) and write the completion marker last."""
    if stages.force and stages.store.done(folder):
        Store.reset(folder)
    with track_stage(stages.tracking, stage, key, key_obj, tasks) as run:  # a no-op without trackers
        t0 = time.perf_counter()
        info = compute(folder)
        info.setdefault("telemetry", {})["wall_time_s"] = time.perf_counter() - t0
        run.finish(info)
    info.update({"stage": stage, "key": key, "key_inputs": key_obj, "tasks": list(tasks), "seed": stages.seed,
                 "created": now_iso(),
                 "provenance": {**provenance(), "impl_version": version}})
    for name in (RESUME_FILE, LEGACY_RESUME_FILE):
        (folder / name).unlink(missing_ok=True)
    write_json(folder / STAGE_MARKER, info)
    stages.log.computed.append(f"{stage}/{key}")
    return info


def _compute_aside(stages: Stages, stage: str, key: str, key_obj: dict[str, Any], tasks: tuple[str, ...],
                   folder: Path, aside: Path, compute: Compute) -> dict[str, Any]:
    """A rank other than 0 computes the stage (its training steps are rank 0's too) into ``aside``, its scratch
    folder, which later stages of the cell read; it starts from rank 0's resume file, so a resumed cell resumes on
    every rank."""
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(parents=True)
    if (folder / RESUME_FILE).exists():
        shutil.copy2(folder / RESUME_FILE, aside / RESUME_FILE)
    info = compute(aside)
    info.update({"stage": stage, "key": key, "key_inputs": key_obj, "tasks": list(tasks), "seed": stages.seed})
    return info


def _complete(stages: Stages, out: Outcome, model_at: Checkpoint | None = None) -> Outcome:
    """A cached stage evaluated on fewer splits than asked (e.g. made by a search, which never reads test):
    evaluate the missing splits now (the model in ``model_at``, default the stage's own folder) and keep
    them with the stage."""
    if "metrics" not in out.info or out.ckpt is None:
        return out
    missing = [s for s in stages.eval_splits if s not in out.info["metrics"]]
    if not missing:
        return out
    metrics, _, kept = evaluate_ckpt(stages, model_at or out.ckpt, missing)
    if not distributed.current().writer:  # procs=N: rank 0 keeps them with the stage
        return Outcome(out.ckpt, {**out.info, "metrics": {**out.info["metrics"], **metrics}}, reused=True)
    with stages.store.lock(out.ckpt.path):
        info = read_json(out.ckpt.path / STAGE_MARKER)
        info["metrics"].update(metrics)
        info["predictions"] = save_predictions(out.ckpt.path, kept)
        write_json(out.ckpt.path / STAGE_MARKER, info)
    return Outcome(out.ckpt, info, reused=True)


def discard(stages: Stages, ckpt: Checkpoint) -> None:
    """Delete a finished stage's files (a later request recomputes it). Waits for anyone computing it."""
    with stages.store.lock(ckpt.path):
        Store.reset(ckpt.path)
