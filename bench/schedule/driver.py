"""Run one cell's strategy through a task schedule, step by step, and write each step into its rows.

Each step restricts the stages to the tasks it serves and asks the strategy for its model (a schedule strategy's
``step``) or its rows (a static strategy's ``run``). A step's scores are its model's on every task it serves; its
cost is what the stages *first used at that step* cost when they were computed (so a rerun that reads them from the
store reports the same costs, and the steps of a row add up to the row). After the last step the driver fine-tunes
every task that arrived after the first step from θ0 alone (``separate``'s very stage, shared and cached): the
baseline of forward transfer.
"""

from __future__ import annotations

from typing import Any

from bench.config import SuiteConfig
from bench.errors import BenchError
from bench.record import Row, ScheduleStep
from bench.stages import Outcome, Stages, make_row
from bench.strategy import Carry, ScheduleStrategy, Strategy, TaskStep
from bench.taskset import schedule_steps


def schedule_of(suite: SuiteConfig) -> list[TaskStep]:
    """The suite's schedule as :class:`TaskStep` objects (empty without one)."""
    if suite.schedule is None:
        return []
    return [TaskStep(k, *parts) for k, parts in enumerate(schedule_steps(suite.schedule, suite.task_names), 1)]


def run_schedule(strategy: Strategy, stages: Stages, params: Any) -> dict[str, Row]:
    """The strategy's rows after the last step, each with its ``schedule`` (one :class:`ScheduleStep` per step) and
    ``schedule_reference`` (each later task's fine-tune from θ0)."""
    steps = schedule_of(stages.ctx.suite)
    history: dict[str, list[tuple[ScheduleStep, Row, list[Outcome]]]] = {}
    charged: dict[str, set[str]] = {}  # row -> stages already charged to an earlier step
    carry: Carry | None = None
    for step in steps:
        stages.restrict(step.tasks)
        start = len(stages.outcomes)
        if isinstance(strategy, ScheduleStrategy):
            carry = strategy.step(stages, params, step, carry)
            rows = {strategy.name: _model_row(stages, carry, step, start)}
        else:
            rows = {str(k): Row.of(v) for k, v in strategy.run(stages, params).items()}
        outcomes = [o for o in stages.outcomes[start:] if o.ckpt is not None]
        for name, row in rows.items():
            mine = {f"{s.stage}/{s.key}" for s in row.stages or []}
            done = charged.setdefault(name, set())
            new = _unique([o for o in outcomes if _id(o) in mine and _id(o) not in done])
            done.update(_id(o) for o in new)
            history.setdefault(name, []).append((_step_entry(step, row, new), row, new))
    stages.restrict(None)
    reference = _reference(stages, steps)
    return {name: _final(entries, reference) for name, entries in history.items()}


def _model_row(stages: Stages, carry: Carry, step: TaskStep, start: int) -> Row:
    """A schedule strategy's row at ``step``: the stages it used in this step, with its model's metrics on every
    task the step serves (the model's own stage's when it evaluated them all, else an ``evaluate`` stage's)."""
    model = carry.model
    if model.ckpt is None or set(model.ckpt.tasks) != set(step.tasks):
        have = sorted(model.ckpt.tasks) if model.ckpt is not None else []
        raise BenchError(f"step {step.index}: the model has heads for {have}, but the step serves {sorted(step.tasks)}")
    got = model.info.get("metrics", {})
    complete = all(t in got.get(split, {}) for split in stages.eval_splits for t in step.tasks)
    ev = model if complete else stages.evaluate(model.ckpt)
    # θ0 is every strategy's starting point, not a step's work (a static strategy's rows leave it out too)
    used = [o for o in stages.outcomes[start:] if o.ckpt is not None and o.ckpt.stage != "init"]
    return make_row(*_unique(used), metrics_from=[ev])


def _step_entry(step: TaskStep, row: Row, new: list[Outcome]) -> ScheduleStep:
    cost = make_row(*new, metrics_from=[])
    keep = lambda per: {split: {t: v for t, v in tasks.items() if t in step.tasks} for split, tasks in per.items()}
    return ScheduleStep(step=step.index, arrived=list(step.arrived), retired=list(step.retired),
                        tasks=list(step.tasks), metrics=keep(row.metrics), predictions=keep(row.predictions or {}),
                        spent=cost.spent or {}, wall_time_s=float(cost.telemetry.wall_time_s or 0.0),
                        stages=cost.stages or [])


def _final(entries: list[tuple[ScheduleStep, Row, list[Outcome]]], reference: dict[str, Any]) -> Row:
    """The last step's row, costed over every step: what the whole schedule spent, with each step inside."""
    last = entries[-1][1]
    every = [o for _, _, new in entries for o in new]
    total = make_row(*every, metrics_from=[])
    return last.model_copy(update={"telemetry": total.telemetry, "spent": total.spent, "stages": total.stages,
                                   "code_versions": total.code_versions,
                                   "best_epoch": {**total.best_epoch, **last.best_epoch},
                                   "schedule": [e[0] for e in entries], "schedule_reference": reference})


def _reference(stages: Stages, steps: list[TaskStep]) -> dict[str, Any]:
    """Each task arriving after step 1, fine-tuned alone from θ0: its scores and predictions (the FWT baseline)."""
    later = [t for s in steps[1:] for t in s.arrived]
    tunes = [stages.finetune(t) for t in later]
    ref = make_row(*tunes) if tunes else None
    return {"metrics": ref.metrics if ref else {}, "predictions": (ref.predictions or {}) if ref else {},
            "stages": [f"{s.stage}/{s.key}" for s in (ref.stages or [])] if ref else []}


def _id(o: Outcome) -> str:
    assert o.ckpt is not None
    return f"{o.ckpt.stage}/{o.ckpt.key}"


def _unique(outcomes: list[Outcome]) -> list[Outcome]:
    seen: set[str] = set()
    out = []
    for o in outcomes:
        if _id(o) not in seen:
            seen.add(_id(o))
            out.append(o)
    return out
