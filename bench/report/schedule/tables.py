"""The schedule report's numeric tables (pandas): one line per row (final-step average, BWT, forgetting, FWT with
their intervals, total costs and their ratio to retrain's), one line per (row, step) of costs, and one line per
(row, step, task) of scores R[k][i] with intervals (what the task-arrival plot draws)."""

from __future__ import annotations

import math

import pandas as pd

from bench.report.schedule.costs import retrain_of, totals, with_ratios
from bench.report.schedule.rows import ScheduleRow, StepScores
from bench.report.schedule.transfer import MEASURES, Value, step_value, value

STATS = ("lo", "hi", "seed_sd", "test_se", "df")


def _value_columns(key: str, v: Value) -> dict[str, float]:
    out = {key: v.mean}
    out |= {f"{key}:{s}": getattr(v, s) for s in STATS}
    out[f"{key}:tasks"] = ",".join(v.tasks)
    return out


def _change(arrived, retired) -> str:
    """``+c −a``: what a step changed."""
    return " ".join([*(f"+{t}" for t in arrived), *(f"−{t}" for t in retired)])


def schedule_table(rows: list[ScheduleRow], scores: StepScores | None, level: float) -> pd.DataFrame:
    """One line per schedule row (index ``variant``)."""
    lines = []
    for row in rows:
        line: dict[str, object] = {"variant": row.name, "strategy": row.strategy, "n": len(row.seeds),
                                   "steps": " | ".join(_change(k.arrived, k.retired) for k in row.steps),
                                   "final_tasks": ",".join(row.last.tasks)}
        test_only = False
        for measure in MEASURES:
            v = value(row, measure, scores, level)
            line |= _value_columns(measure, v)
            test_only = test_only or v.test_only
        total = totals(row, rows)
        ref = retrain_of(row, rows)
        line |= {"train_samples_seen": total["train_samples_seen"], "train_samples_seen:ratio": total["samples_ratio"],
                 "wall_time_s": total["wall_time_s"], "wall_time_s:ratio": total["wall_ratio"],
                 "retrain": ref.name if ref is not None else "", "test_only": test_only}
        lines.append(line)
    return pd.DataFrame(lines).set_index("variant")


def cost_table(rows: list[ScheduleRow]) -> pd.DataFrame:
    """One line per (row, step): what changed, the tasks served, samples seen and wall time, each with its ratio
    to retrain's same step."""
    lines = []
    for row in rows:
        for c in with_ratios(row, rows):
            lines.append({"variant": row.name, "step": c.step, "change": _change(c.arrived, c.retired),
                          "tasks": ",".join(c.tasks), "train_samples_seen": c.train_samples_seen,
                          "train_samples_seen:ratio": c.samples_ratio, "wall_time_s": c.wall_time_s,
                          "wall_time_s:ratio": c.wall_ratio})
    return pd.DataFrame(lines)


def score_table(rows: list[ScheduleRow], scores: StepScores | None, level: float) -> pd.DataFrame:
    """One line per (row, step, task served): R[k][i] (points, sign-flipped) with its interval, and whether the
    task arrived at that step; a retired task's retirement step is a line without a score."""
    lines = []
    for row in rows:
        for k in row.steps:
            for task in k.tasks:
                v = step_value(row, k.index, task, scores, level)
                lines.append({"variant": row.name, "step": k.index, "task": task, "metric": row.primary[task],
                              "sign": row.sign[task], "event": "arrived" if task in k.arrived else "",
                              **_value_columns("score", v)})
            for task in k.retired:
                lines.append({"variant": row.name, "step": k.index, "task": task, "metric": row.primary[task],
                              "sign": row.sign[task], "event": "retired", "score": math.nan})
    frame = pd.DataFrame(lines)
    return frame.drop(columns=[c for c in frame.columns if c.endswith(":tasks")])
