"""``merge_in``: fine-tune each arriving task from θ0 alone and fuse it into the model with any fusion method.

A schedule strategy (docs/dynamic_tasks.md). At every step that adds tasks, each new task is fine-tuned from θ0
(``separate``'s very stage, shared and cached) and the fine-tunes of every task the step serves are fused, in arrival
order, with ``strategy.fusion=`` (``strategy.fusion_params=``); each task keeps its own fine-tune's head. So the
model after an adding step is F(θ0; τ_1..τ_t) with the fine-tunes in the order they arrived: what a continual method
such as ``opcm`` computes one task at a time, and for ``task_arithmetic`` θ0 + λ Σ τ_i. A step's new work is its new
fine-tunes and one fusion; everything earlier comes from the store.

The default fusion is ``mean``: it needs no tuning, its coefficient 1/N follows the number of tasks (a fixed λ such
as task arithmetic's 0.3 under-weights a lone task and over-weights many), subtraction retires a task exactly, and
with one step its fusion is the very ``fuse`` stage of ``fuse_then_joint``'s ``fused`` row.

Retiring a task drops its head. ``strategy.retire=`` says what happens to the backbone at a step that only retires:

* ``subtract`` (default): θ ← θ − c_i τ_i, with c_i the coefficient task i entered with. Defined for the linear
  methods, θ = θ0 + Σ c_i τ_i: ``task_arithmetic`` without DARE (c_i = λ, so retiring gives θ0 + λ Σ_rest τ_j, the
  fusion of the others), ``mean`` (c_i = 1/N of the fusion it entered, so the rest keep weight 1/N) and
  ``weighted`` (c_i = w_i). A non-linear method (TIES, DARE, Breadcrumbs, OPCM, the learned and data-aware ones) has
  no per-task term to take away, so ``subtract`` is refused for it before any work: use ``refuse``;
* ``refuse``: fuse the remaining fine-tunes again (one fusion, any method).

A step that adds tasks always fuses the fine-tunes it serves, so whatever an earlier retirement did, the model after
it is the fusion of its active tasks. BatchNorm statistics after a subtraction are the remaining fine-tunes' mean, as
any fusion makes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from bench import checkpoint as C
from bench.config import Frozen
from bench.errors import BenchError
from bench.fusion import FusionMethod, ModelFusion
from bench.fusion.arithmetic import Mean, TaskArithmetic, Weighted
from bench.schedule import schedule_of
from bench.specs import FusionSpec
from bench.stages import Outcome, Stages, SuiteContext
from bench.strategy import Carry, ScheduleStrategy, TaskStep, register_strategy


class Params(Frozen):
    fusion: FusionSpec = FusionSpec("mean")  # any registered fusion method, e.g. task_arithmetic, ties, opcm, regmean
    fusion_params: dict[str, Any] = Field(default_factory=dict)  # e.g. {lam: 0.3}, {k: 0.2}, {alpha: 0.5}
    retire: Literal["subtract", "refuse"] = "subtract"  # a retiring task's vector subtracted, or the rest re-fused


def linear_coefficients(method: FusionMethod) -> list[float] | None:
    """c_1..c_N when ``method`` fuses as θ0 + Σ c_i τ_i (what ``subtract`` takes away), else None. Exact classes
    only: a subclass may fuse differently."""
    kind = type(method)
    if kind is TaskArithmetic and method.params.dare == 0:
        return [float(method.params.lam)] * method.n
    if kind is Mean:
        return [1.0 / method.n] * method.n
    if kind is Weighted:
        return [float(w) for w in method.weights]
    return None


@register_strategy("merge_in")
class MergeIn(ScheduleStrategy):
    """Each step: the new tasks fine-tuned from θ0 and fused, in arrival order, with the earlier fine-tunes."""

    Params = Params
    colours = {"merge_in": "#CC79A7"}  # Okabe-Ito reddish purple
    families = {"merge_in": "schedule"}
    uses_finetunes, own_checkpoints = True, 2  # the fusions and a retirement's subtraction

    def check_suite(self, params: Params, ctx: SuiteContext) -> None:
        """Every fusion the schedule will ask for is valid (e.g. ``weighted`` needs one weight per fine-tune of each
        step; RegMean linear layers, AdaMerging classes), and ``subtract`` meets a linear method."""
        method: FusionMethod | None = None  # the last fusion's method: the one a subtraction undoes
        for step in schedule_of(ctx.suite):
            if step.arrived or params.retire == "refuse":
                try:
                    method = params.fusion.build(len(step.tasks))
                    if isinstance(method, ModelFusion):
                        method.check(ctx.template, [ctx.task(t) for t in step.tasks])
                except BenchError as e:
                    raise BenchError(f"merge_in step {step.index} fuses {len(step.tasks)} fine-tune(s): {e}") from None
            elif method is not None and linear_coefficients(method) is None:
                raise BenchError(f"merge_in step {step.index} retires {', '.join(step.retired)} by subtracting its "
                                 f"task vector, but fusion {str(params.fusion)!r} is not θ0 + Σ c_i τ_i; use "
                                 "strategy.retire=refuse (fuse the remaining fine-tunes again) or fusion=mean, "
                                 "task_arithmetic or weighted")

    def step(self, stages: Stages, params: Params, step: TaskStep, prev: Carry | None) -> Carry:
        tunes: dict[str, Outcome] = dict(prev.state["tunes"]) if prev is not None else {}
        coef: dict[str, float | None] = dict(prev.state["coef"]) if prev is not None else {}
        retired = {t: tunes.pop(t) for t in step.retired}
        for t in step.retired:
            coef.pop(t, None)
        tunes.update({t: stages.finetune(t) for t in step.arrived})
        order = [t for t in step.seen if t in step.tasks]  # arrival order: a continual method's order
        tunes = {t: tunes[t] for t in order}
        if step.arrived or params.retire == "refuse":
            parts = [tunes[t].ckpt for t in order]
            model = stages.fuse(parts, fusion=params.fusion)
            c = linear_coefficients(params.fusion.build(len(parts)))
            coef = {t: (c[i] if c is not None else None) for i, t in enumerate(order)}
        else:
            assert prev is not None  # step 1 adds tasks
            model = _subtract(stages, prev.model, {t: (o, coef_of(prev, t)) for t, o in retired.items()}, tunes)
        return Carry(model, {"tunes": tunes, "coef": coef})


def coef_of(prev: Carry, task: str) -> float:
    c = prev.state["coef"].get(task)
    if c is None:  # check_suite refuses this before any work; a direct caller gets the same line
        raise BenchError(f"merge_in cannot subtract task {task!r}: the fusion it entered with is not linear; "
                         "use strategy.retire=refuse")
    return float(c)


def _subtract(stages: Stages, model: Outcome, retired: dict[str, tuple[Outcome, float]],
              keep: dict[str, Outcome]) -> Outcome:
    """A stage: ``model``'s backbone minus c_i τ_i of each retired task (float64, cast back), BatchNorm statistics the
    mean of the ``keep`` fine-tunes', integer tensors unchanged; the heads of the ``keep`` tasks only."""
    assert model.ckpt is not None
    theta0 = stages.init()
    tasks = tuple(t for t in stages.ctx.suite.task_names if t in keep)

    def compute(folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        state = C.load_state(model.ckpt.path / C.BACKBONE_FILE)
        buffers = set(C.read_buffers(model.ckpt.path / C.BACKBONE_FILE))
        base = C.load_state(theta0.path / C.BACKBONE_FILE)
        gone = [(C.load_state(o.ckpt.path / C.BACKBONE_FILE), c) for o, c in retired.values()]
        kept = [C.load_state(o.ckpt.path / C.BACKBONE_FILE) for o in keep.values()] if buffers else []
        out: dict[str, torch.Tensor] = {}
        for k, v in state.items():
            if not v.is_floating_point():
                out[k] = v
            elif k in buffers:
                out[k] = (sum(s[k].double() for s in kept) / len(kept)).to(v.dtype) if kept else v
            else:
                acc = v.double()
                for s, c in gone:
                    acc = acc - c * (s[k].double() - base[k].double())
                out[k] = acc.to(v.dtype)
        C.save_state(out, folder / C.BACKBONE_FILE, sorted(buffers))
        heads = C.load_state(model.ckpt.path / C.HEADS_FILE)
        C.save_state({k: v for k, v in heads.items() if k.split(".")[0] in keep}, folder / C.HEADS_FILE)
        return {"telemetry": {}, "retired": {t: c for t, (_, c) in retired.items()}}

    key = {"model": model.ckpt.key, "base": theta0.key, "keep": {t: o.ckpt.key for t, o in keep.items()},
           "retired": {t: (o.ckpt.key, c) for t, (o, c) in retired.items()}}
    return stages.custom("merge_in_retire", key, tasks, compute)
