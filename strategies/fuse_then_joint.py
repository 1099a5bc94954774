"""``fuse_then_joint``: fine-tune per task -> fuse the backbones -> joint training from the fused weights.

The method bench was founded on (docs/protocol.md). The per-task fine-tunes are the very stages ``separate`` runs, so
after ``separate`` they come from the store. Each task keeps its head from its own fine-tune. Two rows come out:
``fused`` (the fused model evaluated before any joint training) and ``fuse_then_joint`` (after joint training with
L = Σ λ_i L_i under any weighting: ``strategy.weighting=uncertainty`` etc. makes the ablation grid).
``strategy.architecture=mmoe`` (docs/architectures.md) applies to the joint phase only: the fine-tunes are
single-task networks and fusion averages their trunks, then the architecture's modules start fresh on the fused
trunk.

Budget: without ``budget.match`` the fine-tunes and the joint phase each run ``train.epochs``, so the row sees about
twice the samples of ``naive_mtl`` (the leaderboard shows it). Under ``budget.match=samples|steps`` the fine-tunes
together spend ``finetune_share`` of naive MTL's budget (each task in proportion to its data) and the joint phase
the rest, so the row's total equals ``naive_mtl``'s; those fine-tunes are then not the ones ``separate`` trains.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from bench.fusion import ModelFusion
from bench.record import Row
from bench.specs import FusionSpec, WeightingSpec, WithArchitecture
from bench.stages import Outcome, Stages, SuiteContext, make_row
from bench.strategy import Strategy, register_strategy


class Params(WithArchitecture):  # strategy.architecture=, strategy.architecture_params=
    fusion: FusionSpec = FusionSpec("mean")  # any registered fusion method: data-free, data-aware or learned
    fusion_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {weights: [...]}, {lam: 0.3}, {k: 0.2}
    weighting: WeightingSpec = WeightingSpec("equal")
    weighting_params: dict[str, Any] = Field(default_factory=dict)
    finetune_share: float = Field(0.5, gt=0, lt=1)  # under budget.match: the fine-tunes' part of the budget


@register_strategy("fuse_then_joint")
class FuseThenJoint(Strategy):
    """Per-task fine-tunes -> fused backbone (own row: fused) -> joint training with any weighting."""

    Params = Params
    rows = ("fused", "fuse_then_joint")
    colours = {"fused": "#56B4E9", "fuse_then_joint": "#0072B2"}  # Okabe-Ito sky blue, blue
    families = {"fused": "fusion", "fuse_then_joint": "fusion"}  # whatever weighting the joint phase used
    uses_finetunes, own_checkpoints = True, 2  # for the free-space estimate
    search_rows = {"fuse": "fused"}  # a fusion-weight search scores the fused model, before any joint training

    # the fusion method, its weights and the weighting are checked with the params and by the plan (bench.specs)

    def check_suite(self, params: Params, ctx: SuiteContext) -> None:
        """Methods that read models or data check the backbone and tasks (RegMean needs linear layers,
        AdaMerging class predictions) before the fine-tunes are trained."""
        if issubclass(params.fusion.resolve().cls, ModelFusion):
            params.fusion.build(len(ctx.tasks)).check(ctx.template, ctx.tasks)

    def run(self, stages: Stages, params: Params) -> dict:
        tunes = self._tunes(stages, params)
        fused = stages.fuse([t.ckpt for t in tunes], fusion=params.fusion)
        fused_eval = stages.evaluate(fused.ckpt)
        joint = stages.joint(init=fused.ckpt, weighting=params.weighting, share=1 - params.finetune_share,
                             architecture=params.architecture)
        return {
            "fused": make_row(*tunes, fused, fused_eval, metrics_from=[fused_eval]),
            "fuse_then_joint": make_row(*tunes, fused, joint, metrics_from=[joint]),
        }

    @staticmethod
    def _tunes(stages: Stages, params: Params) -> list:
        return [stages.finetune(task, share=params.finetune_share) for task in stages.task_names]

    def search_prepare(self, stages: Stages, params: Params, row: str | None = None) -> None:
        if row == "fused":
            self._tunes(stages, params)

    def search_row(self, stages: Stages, params: Params, row: str | None = None) -> Row:
        """The ``fused`` row without the joint phase: the cached fine-tunes, fused with the trial's parameters and
        evaluated (the same stages :meth:`run` computes for that row). In a search's scratch mode a streaming method
        fuses straight into a model in memory and nothing is written (a trial's model is a full backbone, 90 MB for
        MiniLM, and writing and deleting it cost more than fusing it); a learned or data-aware method is a cached
        stage either way (one per configuration, reused by every trial and run that asks for it)."""
        if row != "fused":
            return super().search_row(stages, params, row)
        tunes = self._tunes(stages, params)
        parts = [t.ckpt for t in tunes]
        if not stages.scratch or issubclass(params.fusion.resolve().cls, ModelFusion):
            fused = stages.fuse(parts, fusion=params.fusion)
            ev = stages.evaluate(fused.ckpt)
            out = make_row(*tunes, fused, ev, metrics_from=[ev])
            out.telemetry.fuse_seconds = fused.info.get("telemetry", {}).get("wall_time_s")
            out.telemetry.eval_seconds = ev.info.get("telemetry", {}).get("wall_time_s")
            return out
        t0 = time.perf_counter()
        model, stats = stages.fused_model(parts, fusion=params.fusion)
        t1 = time.perf_counter()
        metrics, rate, _ = stages.evaluate_model(model)
        ev = Outcome(None, {"metrics": metrics, "telemetry": {**rate, "wall_time_s": time.perf_counter() - t0,
                                                              "fusion": stats}})
        out = make_row(ev, metrics_from=[ev])
        out.telemetry.fuse_seconds, out.telemetry.eval_seconds = t1 - t0, time.perf_counter() - t1
        return out
