"""``fuse_then_joint``: fine-tune per task -> fuse the backbones -> joint training from the fused weights.

The method bench was founded on (docs/protocol.md). The per-task fine-tunes are the very stages ``separate`` runs, so
after ``separate`` they come from the store. Each task keeps its head from its own fine-tune. Two rows come out:
``fused`` (the fused model evaluated before any joint training) and ``fuse_then_joint`` (after joint training with
L = Σ λ_i L_i under any weighting: ``strategy.weighting=uncertainty`` etc. makes the ablation grid).

Budget: without ``budget.match`` the fine-tunes and the joint phase each run ``train.epochs``, so the row sees about
twice the samples of ``naive_mtl`` (the leaderboard shows it). Under ``budget.match=samples|steps`` the fine-tunes
together spend ``finetune_share`` of naive MTL's budget (each task in proportion to its data) and the joint phase
the rest, so the row's total equals ``naive_mtl``'s; those fine-tunes are then not the ones ``separate`` trains.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bench.config import Frozen
from bench.fusion import ModelFusion, build_fusion
from bench.stages import Stages, SuiteContext, make_row
from bench.strategy import Strategy, register_strategy
from bench.weighting.base import check_weighting


class Params(Frozen):
    fusion: str = "mean"  # any registered fusion method: data-free, data-aware or learned (docs/fusion.md)
    fusion_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {weights: [...]}, {lam: 0.3}, {k: 0.2}
    weighting: str = "equal"
    weighting_params: dict[str, Any] = Field(default_factory=dict)
    finetune_share: float = Field(0.5, gt=0, lt=1)  # under budget.match: the fine-tunes' part of the budget


@register_strategy("fuse_then_joint")
class FuseThenJoint(Strategy):
    """Per-task fine-tunes -> fused backbone (own row: fused) -> joint training with any weighting."""

    Params = Params

    @staticmethod
    def check(params: Params, tasks: list[str]) -> None:
        """Fail before any training on a bad fusion method, fusion weights or weighting."""
        build_fusion(params.fusion, dict(params.fusion_params), len(tasks))
        check_weighting(params.weighting, dict(params.weighting_params), tasks)

    def check_suite(self, params: Params, ctx: SuiteContext) -> None:
        """Methods that read models or data check the backbone and tasks (RegMean needs linear layers,
        AdaMerging class predictions) before the fine-tunes are trained."""
        fusion = build_fusion(params.fusion, dict(params.fusion_params), len(ctx.tasks))
        if isinstance(fusion, ModelFusion):
            fusion.check(ctx.template, ctx.tasks)

    def run(self, stages: Stages, params: Params) -> dict:
        tunes = [stages.finetune(task, share=params.finetune_share) for task in stages.task_names]
        fused = stages.fuse([t.ckpt for t in tunes], params.fusion, dict(params.fusion_params))
        fused_eval = stages.evaluate(fused.ckpt)
        joint = stages.joint(init=fused.ckpt, weighting=params.weighting, share=1 - params.finetune_share,
                             weighting_params=dict(params.weighting_params))
        return {
            "fused": make_row(*tunes, fused, fused_eval, metrics_from=[fused_eval]),
            "fuse_then_joint": make_row(*tunes, fused, joint, metrics_from=[joint]),
        }
