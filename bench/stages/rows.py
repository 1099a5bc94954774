"""A leaderboard row from the stage outcomes that produced it (:func:`make_row`): metrics, telemetry summed or
weighted over the stages, what the row spent, where its predictions are, and which stages (and code) made it."""

from __future__ import annotations

from typing import Any

from bench.record import Row
from bench.stages.context import Outcome
from bench.stages.predictions import PREDICTIONS


def make_row(*outcomes: Outcome, metrics_from: list[Outcome] | None = None,
             trajectory_from: Outcome | None = None) -> Row:
    """A leaderboard row from the stages that produced it.

    Metrics come from ``metrics_from`` (default: every outcome that has metrics, merged per task; where two have a
    task's metrics, the later one wins); telemetry adds up wall time and parameters over every stage (a
    ``separate`` row costs T models), takes the throughput and peak memory of the training stages, and sums their
    degenerate steps (``degenerate``: event -> steps where the balancer flagged it, present only when one did).

    The row's trajectories (the per-step losses and task weights the report's training figures draw) and their
    ``weights_label`` come from one stage: ``trajectory_from`` when given, else the *last* of ``outcomes`` whose
    ``info["trajectories"]`` is not empty (a training stage's; fusion and evaluation have none). So
    ``make_row(*tunes, fused, joint)`` draws the joint training, and ``make_row(*tunes)`` as well as
    ``make_row(*tunes, fused, fused_eval)`` the last fine-tune. To draw another stage, name it
    (``make_row(*tunes, fused, joint, trajectory_from=tunes[0])``) rather than reorder ``outcomes``, whose order
    also sets the metrics' precedence and the order of the row's stages.
    """
    src = metrics_from if metrics_from is not None else [o for o in outcomes if "metrics" in o.info]
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for o in src:
        for split, per_task in o.info["metrics"].items():
            metrics.setdefault(split, {}).update(per_task)
    trained = [o for o in outcomes if o.info.get("telemetry", {}).get("train_samples")]
    tel: dict[str, Any] = {"wall_time_s": sum(o.info.get("telemetry", {}).get("wall_time_s", 0.0) for o in outcomes)}
    if trained:
        samples = sum(o.info["telemetry"]["train_samples"] for o in trained)
        ttime = sum(o.info["telemetry"]["train_time_s"] for o in trained)

        def steady(t: dict[str, Any]) -> tuple[float, float]:
            """(samples, seconds) of a stage's steps that did not compile (torch.compile's time is not throughput)."""
            if t.get("throughput_excludes_compile"):
                return t["train_samples"] - t["compile_samples"], t["train_time_s"] - t["compile_time_s"]
            return t["train_samples"], t["train_time_s"]

        runs = [steady(o.info["telemetry"]) for o in trained]
        stime = sum(r[1] for r in runs)
        tel.update({
            "train_samples": samples,
            "train_time_s": ttime,
            "train_samples_per_s": sum(r[0] for r in runs) / max(stime, 1e-9),
            "trainable_params": sum(o.info["telemetry"]["trainable_params"] for o in trained),
            "peak_memory_mb": max(o.info["telemetry"]["peak_memory_mb"] for o in trained),
            "memory_kind": trained[0].info["telemetry"]["memory_kind"],
            "device": trained[0].info["telemetry"]["device"],
            "step_time_ms": sum(o.info["telemetry"]["step_time_ms"] * o.info["telemetry"]["steps"] for o in trained)
            / max(1, sum(o.info["telemetry"]["steps"] for o in trained)),
        })
        breakdowns = [o.info["telemetry"].get("step_breakdown_ms") for o in trained]
        if all(breakdowns):  # step-weighted over the training stages, like step_time_ms
            steps = [o.info["telemetry"]["steps"] for o in trained]
            tel["step_breakdown_ms"] = {k: sum(b[k] * n for b, n in zip(breakdowns, steps)) / max(1, sum(steps))
                                        for k in breakdowns[0]}
        reserved = [o.info["telemetry"].get("peak_reserved_mb") for o in trained]
        if all(r is not None for r in reserved):
            tel["peak_reserved_mb"] = max(reserved)
        mfu = [o.info["telemetry"].get("mfu") for o in trained]
        if all(m is not None for m in mfu):  # time-weighted over the training stages
            tel["mfu"] = sum(m * r[1] for m, r in zip(mfu, runs)) / max(stime, 1e-9)
        tok = [o.info["telemetry"].get("train_tokens_per_s") for o in trained]
        if all(tok):
            tel["train_tokens_per_s"] = sum(t * r[1] for t, r in zip(tok, runs)) / max(stime, 1e-9)
        compiled = [o.info["telemetry"] for o in trained if "compile_time_s" in o.info["telemetry"]]
        if compiled:  # reported beside the throughput it is excluded from
            tel["compile_time_s"] = sum(t["compile_time_s"] for t in compiled)
            tel["compile_steps"] = sum(t["compile_steps"] for t in compiled)
    degenerate: dict[str, int] = {}
    for o in trained:  # steps where a stage's balancer degenerated (Balancer.flag): summed over the stages
        for event, n in o.info["telemetry"].get("degenerate", {}).items():
            degenerate[event] = degenerate.get(event, 0) + int(n)
    if degenerate:  # only when one happened: rows that never degenerated keep their records as they were
        tel["degenerate"] = dict(sorted(degenerate.items()))
    for key in ("eval_samples_per_s", "eval_tokens_per_s"):
        evals = [o.info["telemetry"][key] for o in outcomes if key in o.info.get("telemetry", {})]
        if evals:
            tel[key] = sum(evals) / len(evals)
    tel["stages"] = [{"stage": o.ckpt.stage if o.ckpt else "?", "key": o.ckpt.key if o.ckpt else "?",
                      "reused": o.reused, **{k: v for k, v in o.info.get("telemetry", {}).items()
                                             if k in ("wall_time_s", "train_samples_per_s", "peak_memory_mb")}}
                     for o in outcomes]
    best = {f"{o.ckpt.stage}:{','.join(o.ckpt.tasks)}": o.info["best_epoch"] for o in outcomes
            if o.ckpt and "best_epoch" in o.info}
    with_traj = trajectory_from if trajectory_from is not None else \
        next((o for o in reversed(outcomes) if o.info.get("trajectories")), None)
    traj = with_traj.info.get("trajectories") or {} if with_traj else {}
    stages = [_stage_provenance(o) for o in outcomes if o.ckpt is not None]
    row = {"metrics": metrics, "best_epoch": best, "telemetry": tel, "trajectories": traj,
           "spent": _budget(trained), "predictions": _predictions(src), "stages": stages,
           "code_versions": sorted({s["code_version"] for s in stages})}
    fusion = next((o.info["fusion"] for o in outcomes if o.info.get("fusion")), None)
    if fusion is not None:  # how the row's weights were fused (learned coefficients for the report's heatmap)
        row["fusion"] = fusion
        fits = [o.info["telemetry"]["fusion"]["fit"] for o in outcomes
                if "fit" in o.info.get("telemetry", {}).get("fusion", {})]
        if fits:  # a learned fusion's optimiser steps (on validation data): part of the row's cost, not training
            row["spent"]["fusion_steps"] = sum(int(f["steps"]) for f in fits)
    if with_traj is not None and with_traj.info.get("weights_label"):
        row["weights_label"] = with_traj.info["weights_label"]
    return Row(**row)


def _budget(trained: list[Outcome]) -> dict[str, Any]:
    """What a row's training cost in data and updates, summed over every training stage it used (a ``separate``
    row trains T models; ``fuse_then_joint`` pays for its fine-tunes too)."""
    tels = [o.info["telemetry"] for o in trained]
    per_task: dict[str, int] = {}
    for t in tels:  # examples that carried each task's label (partial labels: fewer than the examples seen)
        for task, n in t.get("train_samples_per_task", {}).items():
            per_task[task] = per_task.get(task, 0) + int(n)
    return {"train_samples_seen": sum(int(t.get("train_samples", 0)) for t in tels),
            **({"train_samples_per_task": per_task} if per_task else {}),
            "optimizer_steps": sum(int(t.get("steps", 0)) for t in tels),
            "epochs": sum(float(t.get("epochs", t.get("epochs_run", 0))) for t in tels)}


def _predictions(src: list[Outcome]) -> dict[str, dict[str, str]]:
    """``[split][task]`` -> the predictions file (relative to the suite's store) behind each reported metric; the
    same precedence as the metrics (a later outcome wins)."""
    out: dict[str, dict[str, str]] = {}
    for o in src:
        if o.ckpt is None:
            continue
        for split, tasks in o.info.get("predictions", {}).items():
            for task in tasks:
                out.setdefault(split, {})[task] = f"stages/{o.ckpt.stage}/{o.ckpt.key}/{PREDICTIONS}"
    return out


def _stage_provenance(o: Outcome) -> dict[str, Any]:
    assert o.ckpt is not None
    prov = o.info.get("provenance", {})
    return {"stage": o.ckpt.stage, "key": o.ckpt.key, "reused": o.reused,
            "code_version": prov.get("code_version", "unknown"), "impl_version": prov.get("impl_version"),
            "versions": prov.get("versions", {})}
