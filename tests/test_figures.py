"""The report's figures at 20+ rows: families from the plug-ins, the forest plot's order and marks, Pareto labels,
per-task panels with names on the axis (docs/figures.md). Boards are built by hand: no training, no statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.report.leaderboard import Leaderboard
from bench.report.plots import write_plots
from bench.report.plots.bars import bars_figure
from bench.report.plots.common import figure_order, marks
from bench.report.plots.forest import forest_figure
from bench.report.plots.pareto import compared_front, pareto_figure
from bench.report.style import FAMILIES, Styles
from bench.strategy import STRATEGIES
from bench.weighting import WEIGHTINGS
from bench.weighting.base import FAMILIES as WEIGHTING_FAMILIES

GRADIENT = ["aligned_mtl", "cagrad", "config", "dualproj", "fairgrad", "graddrop", "gradvac", "imtl_g", "mgda",
            "nash_mtl", "pcgrad", "upgrad"]
LOSS = ["dwa", "equal", "famo", "gls", "gradnorm", "imtl_l", "rlw", "stch", "uncertainty"]
TASKS = {"up": "pearson", "down": "accuracy"}


def test_every_weighting_declares_an_allowed_family():
    assert set(WEIGHTING_FAMILIES) == {"loss", "gradient"}
    for name in WEIGHTINGS.names():
        assert WEIGHTINGS.get(name).family in WEIGHTING_FAMILIES, name
    assert [n for n in GRADIENT if WEIGHTINGS.get(n).family != "gradient"] == []
    assert [n for n in LOSS + ["static"] if WEIGHTINGS.get(n).family != "loss"] == []


def test_row_families_come_from_strategies_and_weightings():
    family = Styles.of().family  # no records: what the plug-ins declare
    for name in STRATEGIES.names():
        for row, declared in STRATEGIES.get(name).families.items():
            assert declared in FAMILIES, (name, row, declared)
    assert family("separate") == "baseline"
    assert family("naive_mtl") == "loss"  # its default weighting, equal
    assert family("naive_mtl[weighting=pcgrad]") == "gradient"
    assert family("naive_mtl[train.lr=0.001,weighting=upgrad]") == "gradient"
    assert family("naive_mtl[weighting=dwa]") == family("uncertainty") == family("gradnorm") == "loss"
    assert family("fused") == family("fused[fusion=ties]") == "fusion"
    assert family("fuse_then_joint[fusion=ties,weighting=mgda]") == "fusion"  # the strategy's declaration wins
    assert family("my_label") == family("naive_mtl[weighting=not_installed]") == "other"


def board(n_loss: int = 9, n_gradient: int = 12, seed: int = 0, **columns) -> Leaderboard:
    """separate + a fused row + ``n_loss`` loss-level and ``n_gradient`` gradient-level naive_mtl rows with random
    scores in 90–99 and intervals; every row but separate significantly worse than it."""
    rng = np.random.default_rng(seed)
    rows = (["separate", "fused[fusion=ties]"] + [f"naive_mtl[weighting={w}]" for w in LOSS[:n_loss]]
            + [f"naive_mtl[weighting={w}]" for w in GRADIENT[:n_gradient]])
    data: dict[str, list] = {}
    for task, metric in TASKS.items():
        values = np.r_[98.5, rng.uniform(90, 98, len(rows) - 1)]
        key = f"{task}/{metric}"
        data[key], data[key + ":lo"], data[key + ":hi"] = values, values - 0.6, values + 0.4
        data[key + ":p_adj"] = [math.nan] + [0.001] * (len(rows) - 1)
        data[key + ":mark"] = ["best"] + [""] * (len(rows) - 1)
    data["avg"] = np.mean([data[f"{t}/{m}"] for t, m in TASKS.items()], axis=0)
    data["delta_m"] = 100 * (data["avg"] - data["avg"][0]) / data["avg"][0]
    for key in ("avg", "delta_m"):
        data[key + ":lo"], data[key + ":hi"] = data[key] - 0.5, data[key] + 0.5
        data[key + ":p_adj"] = [math.nan] + [0.001] * (len(rows) - 1)
        data[key + ":mark"] = ["best"] + [""] * (len(rows) - 1)
    data["baseline"] = ["separate"] * len(rows)
    data["train_samples_per_s"] = rng.uniform(1000, 20000, len(rows))
    data["peak_memory_mb"] = rng.uniform(800, 900, len(rows))
    data |= columns
    table = pd.DataFrame(data, index=pd.Index(rows, name="variant"))
    tasks = {t: {"primary": m, "metrics": {m: "max"}} for t, m in TASKS.items()}
    return Leaderboard(suite="toy", split="test", tasks=tasks, table=table)


def top_to_bottom(ax) -> list[str]:
    ticks = list(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())))
    return [label for _, label in sorted(ticks, key=lambda t: -t[0])]


def test_forest_groups_by_family_and_orders_rows_by_value():
    lb = board()
    fig = forest_figure(lb)
    shown = top_to_bottom(fig.axes[0])
    assert shown == figure_order(lb, "delta_m")
    assert len(shown) == 23 and shown[:2] == ["separate", "fused[fusion=ties]"]
    groups = [lb.styles.family(v) for v in shown]
    assert groups == sorted(groups, key=["baseline", "fusion", "loss", "gradient"].index)
    for name in ("loss", "gradient"):
        values = [lb.table.loc[v, "delta_m"] for v in shown if lb.styles.family(v) == name]
        assert values == sorted(values, reverse=True), name
    # the drawn points sit on their row's value: the Δm% panel's markers, top to bottom
    points = sorted(((line.get_ydata()[0], line.get_xdata()[0]) for line in fig.axes[0].lines
                     if len(line.get_xdata()) == 1 and line.get_marker() not in ("None", None, "")),
                    key=lambda p: -p[0])
    assert [x for _, x in points] == pytest.approx([lb.table.loc[v, "delta_m"] for v in shown])
    assert [ax.get_xlabel().split(" ")[0] for ax in fig.axes[:2]] == ["Δm%", "Avg"]


def test_forest_without_a_baseline_draws_avg_only_and_sorts_by_it():
    lb = board(n_loss=3, n_gradient=2, delta_m=[math.nan] * 7)
    fig = forest_figure(lb)
    assert fig.axes[0].get_xlabel().startswith("Avg")
    shown = top_to_bottom(fig.axes[0])
    values = [lb.table.loc[v, "avg"] for v in shown if lb.styles.family(v) == "loss"]
    assert values == sorted(values, reverse=True)


def test_marks_need_p_below_alpha_and_a_markable_row():
    n = 7
    lb = board(n_loss=3, n_gradient=2, **{"delta_m:markable": [True, True, False, True, True, True, True],
                                          "delta_m:p_adj": [math.nan, 0.001, 0.001, 0.2, 0.001, 0.001, 0.001]})
    rows = list(lb.table.index)
    got = marks(lb, "delta_m")
    assert [got[v].significant for v in rows] == [False, True, False, False, True, True, True]
    assert got["separate"].status == "best" and got[rows[2]].status == ""
    assert all(m.significant for v, m in marks(lb, "avg").items() if v != "separate")  # no column: markable
    fig = forest_figure(lb)
    twin = next(ax for ax in fig.axes if ax.get_yticklabels() and ax.yaxis.get_label_position() == "right")
    labels = dict(zip(top_to_bottom(fig.axes[0]), top_to_bottom(twin)))
    assert "*" in labels[rows[1]] and "*" not in labels[rows[2]] and "*" not in labels[rows[3]]
    bold = [t.get_text() for t in twin.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == [labels["separate"]] and len(labels) == n
    grey = [t.get_text() for t in twin.get_yticklabels() if t.get_color() == "0.5"]
    assert grey == [labels[rows[2]]]  # the row that may carry no mark


def test_pareto_labels_the_front_and_the_baseline_with_the_legend_outside():
    lb = board()
    fig = pareto_figure(lb, "train_samples_per_s", "max")
    ax = fig.axes[0]
    rows = list(lb.table.index)
    front = compared_front(rows, lb.table["train_samples_per_s"].to_numpy(), lb.table["delta_m"].to_numpy(), "max",
                           lb.styles)
    expected = {v for v, f in zip(rows, front) if f} | {"separate"}
    assert {t.get_text() for t in ax.texts} == expected and len(expected) < len(rows)
    assert not front[0] and front.sum() >= 1  # the front is that of the rows compared with the baseline
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    few = board(n_loss=3, n_gradient=2)  # 7 rows: every point is labelled
    assert {t.get_text() for t in pareto_figure(few, "peak_memory_mb", "min").axes[0].texts} == set(few.table.index)


def test_bars_put_names_on_the_axis_and_zoom_on_the_scores(tmp_path):
    lb = board()
    fig = bars_figure(lb)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(TASKS)
    assert top_to_bottom(panels[0]) == figure_order(lb, "delta_m")
    for ax in panels:
        assert ax.get_xlim()[0] > 80  # scores of 90–99: not drawn from 0
    stars = [t.get_text() for t in panels[0].texts]
    assert stars.count("*") == len(lb.table) - 1
    paths = write_plots(board(n_loss=2, n_gradient=1), {}, tmp_path)  # small: saving is the slow part
    for name in ("forest_test_png", "forest_test_pdf", "bars_test_png", "pareto_throughput_png",
                 "pareto_memory_png"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
