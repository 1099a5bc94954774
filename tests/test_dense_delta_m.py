"""Δm% with the dense kinds' lower-is-better metrics: signs by hand, both averages of :func:`bench.metrics.delta_m`,
the leaderboard's Δm% (``delta_m=primary`` and ``all``) and its interval's centre, and the ↓ of the headers.

The numbers are chosen so that a wrong sign on any ↓ metric changes the result: abs_err and median_angle improve
(lower), rel_err and mean_angle get worse (higher).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import TaskConfig
from bench.metrics import delta_m
from bench.report import build_leaderboards, write_report
from bench.report.leaderboard import report_options, to_latex, to_markdown
from bench.tasks import task_kind
from tests.test_dense_figure import (
    SUITE,
    dense_arrays,
    ground_truth,
    kind_store,
    predicted,
    write_dense_record,
)

#: the NYUv2 metrics and directions (docs/task_kinds.md): ↓ errors and angles, ↑ IoU, accuracy and within-t°
DIRECTIONS = {
    "segmentation": {"miou": "max", "pixel_acc": "max"},
    "depth": {"abs_err": "min", "rel_err": "min"},
    "normals": {"mean_angle": "min", "median_angle": "min", "within_11.25": "max", "within_22.5": "max",
                "within_30": "max"},
}
PRIMARY = {"segmentation": "miou", "depth": "abs_err", "normals": "mean_angle"}
BASE = {"segmentation": {"miou": 0.40, "pixel_acc": 0.60},
        "depth": {"abs_err": 0.50, "rel_err": 0.20},
        "normals": {"mean_angle": 20.0, "median_angle": 16.0, "within_11.25": 0.25, "within_22.5": 0.50,
                    "within_30": 0.60}}
ROW = {"segmentation": {"miou": 0.44, "pixel_acc": 0.57},  # +10%, -5%
       "depth": {"abs_err": 0.45, "rel_err": 0.22},  # 10% lower error: +10%; 10% higher: -10%
       "normals": {"mean_angle": 21.0, "median_angle": 15.2, "within_11.25": 0.30, "within_22.5": 0.45,
                   "within_30": 0.63}}  # -5%, +5%, +20%, -10%, +5%
# by hand, the signed relative changes (−1 for a ↓ metric), per task:
#   segmentation (+0.10 − 0.05) / 2 = 0.025; depth (+0.10 − 0.10) / 2 = 0; normals (−0.05 + 0.05 + 0.20 − 0.10 + 0.05) / 5
#   = 0.03
BY_TASK = 100 * (0.025 + 0.0 + 0.03) / 3  # 1.8333...
BY_METRIC = 100 * (0.10 - 0.05 + 0.10 - 0.10 - 0.05 + 0.05 + 0.20 - 0.10 + 0.05) / 9  # 2.2222...
PRIMARIES = 100 * (0.10 + 0.10 - 0.05) / 3  # miou, abs_err, mean_angle: 5.0 (a wrong ↓ sign gives 1.67)


def flat(values: dict) -> dict:
    return {(t, m): v for t, per in values.items() for m, v in per.items()}


DIRS = flat(DIRECTIONS)
ALL = list(DIRS)


def test_delta_m_signs_the_lower_is_better_dense_metrics_with_both_averages():
    assert delta_m(flat(ROW), flat(BASE), ALL, DIRS) == pytest.approx(BY_TASK)
    assert delta_m(flat(ROW), flat(BASE), ALL, DIRS, average="task") == pytest.approx(BY_TASK)
    assert delta_m(flat(ROW), flat(BASE), ALL, DIRS, average="metric") == pytest.approx(BY_METRIC)
    primaries = [(t, m) for t, m in PRIMARY.items()]
    assert delta_m(flat(ROW), flat(BASE), primaries, DIRS) == pytest.approx(PRIMARIES)
    assert delta_m(flat(ROW), flat(BASE), primaries, DIRS, average="metric") == pytest.approx(PRIMARIES)
    # the baseline against itself is 0; the row's mirror image (every change reversed) the negative
    assert delta_m(flat(BASE), flat(BASE), ALL, DIRS) == 0.0
    mirror = {k: 2 * BASE[k[0]][k[1]] - v for k, v in flat(ROW).items()}
    assert delta_m(mirror, flat(BASE), ALL, DIRS, average="metric") == pytest.approx(-BY_METRIC)


def _hand_store(results: Path) -> None:
    tasks = {t: {"target": t, "primary": PRIMARY[t], "metrics": DIRECTIONS[t]} for t in DIRECTIONS}
    write_dense_record(results, "separate", 0, tasks=tasks, metrics=BASE)
    write_dense_record(results, "naive_mtl", 0, tasks=tasks, metrics=ROW)


@pytest.mark.integration
@pytest.mark.parametrize(("mode", "expected"), [("primary", PRIMARIES), ("all", BY_TASK)])
def test_the_leaderboards_delta_m_of_a_dense_row_equals_the_hand_value(tmp_path, mode, expected):
    _hand_store(tmp_path)
    boards, _ = build_leaderboards(tmp_path, SUITE, options=report_options(delta_m=mode))
    table = boards[0].table
    assert table.loc["naive_mtl", "delta_m"] == pytest.approx(expected)
    assert table.loc["separate", "delta_m"] == pytest.approx(0.0)
    assert table.loc["naive_mtl", "delta_m_seed_mean"] == pytest.approx(expected)
    # ↓ metrics stay in raw units, ↑ ones in points (×100)
    assert table.loc["naive_mtl", "depth/abs_err"] == pytest.approx(0.45)
    assert table.loc["naive_mtl", "segmentation/miou"] == pytest.approx(44.0)
    assert np.isnan(table.loc["naive_mtl", "avg"])  # primaries of both directions: no Avg


@pytest.mark.integration
@pytest.mark.filterwarnings("error::pandas.errors.PerformanceWarning")  # nine metrics: no fragmented-frame warning
def test_headers_mark_every_dense_metric_with_its_direction(tmp_path):
    _hand_store(tmp_path)
    boards, _ = build_leaderboards(tmp_path, SUITE, options=report_options(delta_m="all"))
    md, tex = to_markdown(boards[0]), to_latex(boards[0])
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    for (task, metric), direction in DIRS.items():
        if direction == "min":
            assert f"| {task} {metric} ↓ |" in header, (task, metric)
        else:
            assert f"| {task} {metric} ↑ (%) |" in header, (task, metric)
    assert tex.count(r"$\downarrow$") >= 4


@pytest.mark.integration
def test_the_delta_m_interval_is_centred_on_the_tables_delta_m_with_lower_is_better_metrics(tmp_path):
    """The two-level Δm% (from the per-example stats) is linearised with the same signs as the table's."""
    truth = ground_truth()
    for strategy, skill in (("separate", 1), ("naive_mtl", 2)):
        for seed in (0, 1):
            pred = predicted(truth, np.random.default_rng([seed, skill]))
            write_dense_record(tmp_path, strategy, seed, arrays=dense_arrays(pred, truth))
    for mode in ("primary", "all"):
        boards, _ = build_leaderboards(tmp_path, SUITE, options=report_options(delta_m=mode))
        lb = boards[0]
        value = lb.table.loc["naive_mtl", "delta_m"]
        assert lb.inference.estimate("naive_mtl", "delta_m").value == pytest.approx(value)
        assert lb.table.loc["naive_mtl", "delta_m:lo"] < value < lb.table.loc["naive_mtl", "delta_m:hi"]
        for key in lb.score_keys():
            if key == "avg":  # primaries of both directions: the board has no Avg
                continue
            assert lb.table[f"{key}:lo"].notna().all() and lb.table[f"{key}:hi"].notna().all(), key


def test_the_dense_kinds_declare_the_directions_used_here():
    for task, directions in DIRECTIONS.items():
        kind = task_kind(TaskConfig(name=task, input="image", target=task,
                                    **({"num_classes": 3} if task == "segmentation" else {})))
        assert {m: kind.direction(m) for m in kind.metric_names} == directions
        assert kind.primary == PRIMARY[task]


@pytest.mark.integration
def test_every_dense_metric_has_an_interval_in_the_markdown_and_csv_with_delta_m_all(tmp_path):
    """From what the real kinds keep (per-image stats; mIoU and the median angle by their own recipes). With the
    default ``delta_m=primary`` the tables show, and test, each task's primary metric only."""
    kind_store(tmp_path, rows=("separate", "naive_mtl"), seeds=(0, 1, 2))
    paths = write_report(tmp_path, SUITE, tmp_path / "all", delta_m="all")
    csv = pd.read_csv(paths["csv"]).set_index("variant")
    md = paths["md"].read_text()
    for (task, metric), direction in DIRS.items():
        lo, hi, value = (csv[f"{task}/{metric}{s}"] for s in (":lo", ":hi", ""))
        assert lo.notna().all() and hi.notna().all() and (lo <= value).all() and (value <= hi).all(), metric
        assert f"{task} {metric} {'↓' if direction == 'min' else '↑ (%)'}" in md
    row = next(line for line in md.splitlines() if line.startswith("| `naive_mtl`"))
    assert row.count("[") == len(DIRS) + 1  # the nine metrics and Δm%
    primary = pd.read_csv(write_report(tmp_path, SUITE, tmp_path / "primary")["csv"])
    assert [c for c in primary.columns if c.endswith(":lo") and "/" in c] == [f"{t}/{m}:lo" for t, m in PRIMARY.items()]
