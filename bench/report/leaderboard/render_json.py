"""The JSON renderer (``leaderboard.json``): every split's rows, captions, notes, the statistics' settings and what
each column's unit is."""

from __future__ import annotations

import json
import math

from bench import stats
from bench.report.leaderboard.board import Leaderboard
from bench.report.leaderboard.captions import caption
from bench.report.leaderboard.degenerate import UNITS as DEGENERATE_UNITS
from bench.report.leaderboard.render_csv import to_frame
from bench.report.marks import POWER
from bench.report.records import BASELINE_VARIANT

LEADERBOARD_SCHEMA = 3  # leaderboard.json: 2 adds intervals, tests, marks, notes, options; 3 two-level t


UNITS = ("points: max-direction metrics ×100, min-direction metrics raw; delta_m in %; std with ddof=1; "
         "<col>:lo/:hi two-level t interval at `level`; <col>:seed_sd SD over seeds of the per-seed scores; "
         "<col>:test_se test-set standard error of the mean; <col>:df Welch–Satterthwaite degrees of freedom; "
         "<col>:p raw and <col>:p_adj corrected p of the test against the row's baseline (<col>:test names it; "
         "p_adj only for markable rows); <col>:markable whether the row may carry a mark (unmarked: why not); "
         "<col>:mark best|tie; <col>:p_best two-level t p against the column's best; <col>:wilson_lo/hi Wilson "
         "interval of accuracy pooled over seeds")


GROUP_UNITS = ("; delta_m@<group>: Δm% over that group's tasks (boards.<split>.groups), with the columns of "
               "delta_m; its :p_adj corrected over the per-group tests only (boards.<split>.n_group_tests)")


def board_info(lb: Leaderboard) -> dict:
    """What a board's JSON says besides its rows: caption, notes and the statistics' settings (and, on a board with
    per-group Δm% columns, each group's tasks and the number of tests in their correction family)."""
    groups = ({"groups": {g: list(tasks) for g, tasks in lb.groups.items()},
               "n_group_tests": lb.marking.n_group_tests} if lb.groups else {})
    return {"caption": caption(lb), "notes": list(lb.notes), "delta_m_metrics": [f"{t}/{m}" for t, m in
                                                                                  lb.delta_metrics],
            "examples": lb.examples, "n_tests": lb.marking.n_tests, "tests": list(lb.marking.tests_used),
            "mde_avg": None if math.isnan(lb.marking.mde) else lb.marking.mde, "mde_seeds": lb.marking.mde_seeds,
            "mde_avg_with_more_seeds": {str(k): v for k, v in lb.marking.mde_more.items()},
            "unmarked": dict(lb.marking.unmarked), "baselines": lb.baselines, **groups}


def to_json(lbs: list[Leaderboard]) -> str:
    lb = lbs[0]
    frame = to_frame(lbs).astype(object)
    frame = frame.where(frame.notna(), None)
    o = lb.options
    # the degenerate:<event> columns are explained only where a row has them (other boards keep their bytes)
    units = UNITS + (DEGENERATE_UNITS if any(b.degenerate for b in lbs) else "") + (
        GROUP_UNITS if any(b.groups for b in lbs) else "")
    payload = {
        "schema_version": LEADERBOARD_SCHEMA, "suite": lb.suite, "backbone": lb.backbone, "seeds": list(lb.seeds),
        "budget": lb.budget, "memory_kind": lb.memory_kind, "units": units, "baseline_variant": BASELINE_VARIANT,
        "options": {"level": o.level, "interval": o.interval, "delta_m": o.delta_m, "correction": o.correction,
                    "correction_name": stats.CORRECTIONS[o.correction], "min_seeds": o.min_seeds,
                    "budget_tolerance": o.budget_tolerance, "power": POWER},
        "notes": list(lb.notes),
        "tasks": lb.tasks,
        "boards": {b.split: board_info(b) for b in lbs},
        "splits": {b.split: [r for r in frame.to_dict("records") if r["split"] == b.split] for b in lbs},
    }
    return json.dumps(payload, indent=2, default=_json_default) + "\n"


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
