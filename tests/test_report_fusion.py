"""Learned fusion coefficients in the report: the rows' optional ``fusion`` key, its validation, the coefficient
heatmaps, and the transductive marker.

Records are the schema-1 fixtures of tests/test_report.py (tests/fixtures/records/synthetic) copied into a temporary
store, plus ``fuse_then_joint`` records written by :func:`write_fusion_record`: the fixture's ``ftj<seed>`` record
relabelled, with the same ``fusion`` object on both of its rows (``fused`` and ``fuse_then_joint`` share the fuse
stage), as ``bench run`` writes them.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bench.report import build_leaderboards, write_report
from bench.report.leaderboard import TRANSDUCTIVE_NOTE, caption, to_latex, to_markdown, to_rich
from bench.report.plots import (
    coefficient_figure,
    coefficient_groups,
    coefficient_matrix,
    short_layer_names,
    tick_step,
)
from bench.report.records import RecordWarning, fusion_coefficients, load_records
from bench.report.style import Styles

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures" / "records"
SUITE = "synthetic"
TASKS = ["t0", "r0"]  # the fixture suite's tasks
LAYERS = ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
          "encoder.layer.0.output.dense.weight", "pooler.dense.weight"]
LAYER_WISE = "fuse_then_joint[fusion=adamerging_layer]"
TASK_WISE = "fuse_then_joint[fusion=adamerging_task]"
DATA_FREE = "fuse_then_joint[fusion=ties]"
TRANSDUCTIVE = "fuse_then_joint[fusion=adamerging_layer,transductive=true]"


def layer_values(seed: int) -> list[list[float]]:
    """A 4 × 2 coefficient matrix that differs by seed (so the mean is not any one seed's)."""
    return [[0.1 * (i + 1) + 0.02 * seed, 0.3 - 0.05 * i + 0.04 * seed] for i in range(len(LAYERS))]


def fusion(method: str, seed: int = 0, *, coefficients: str | None = "layers", transductive: bool = False) -> dict:
    out = {"method": method, "params": {"init": 0.3, "lr": 0.001, "steps": 100, "transductive": transductive},
           "transductive": transductive}
    if coefficients == "layers":
        out["coefficients"] = {"layers": LAYERS, "tasks": TASKS, "values": layer_values(seed)}
    elif coefficients == "tasks":
        out["coefficients"] = {"layers": ["all"], "tasks": TASKS, "values": [[0.3 + 0.1 * seed, 0.5]]}
    return out


def write_fusion_record(results: Path, label: str, seed: int, fusion_obj) -> Path:
    """The fixture's fuse_then_joint record of ``seed``, relabelled ``label``, both rows carrying ``fusion_obj``."""
    record = json.loads((FIXTURES / SUITE / "cells" / "fuse_then_joint" / f"ftj{seed}" / "record.json").read_text())
    method = label.split("fusion=", 1)[1].split(",")[0].rstrip("]")
    record.update(label=label, params={**record["params"], "fusion": method, "label": label},
                  cell=f"{label}-{seed}")
    for row in record["rows"].values():
        row["fusion"] = copy.deepcopy(fusion_obj)
    folder = results / SUITE / "cells" / "fuse_then_joint" / f"{re.sub(r'[^A-Za-z0-9]+', '_', label)}-{seed}"
    folder.mkdir(parents=True)
    path = folder / "record.json"
    path.write_text(json.dumps(record))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES, tmp_path / "results")
    return tmp_path / "results"


@pytest.fixture
def fusion_results(results: Path) -> Path:
    """The fixtures plus a layer-wise, a task-wise and a data-free fuse_then_joint label, two seeds each."""
    for seed in (0, 1):
        write_fusion_record(results, LAYER_WISE, seed, fusion("adamerging_layer", seed))
        write_fusion_record(results, TASK_WISE, seed, fusion("adamerging_task", seed, coefficients="tasks"))
        write_fusion_record(results, DATA_FREE, seed, fusion("ties", seed, coefficients=None))
    return results


def fused(variant: str) -> str:
    return variant.replace("fuse_then_joint[", "fused[", 1)


# ----------------------------------------------------------------------------------------------- reading


def test_reader_returns_one_coefficient_set_per_seed_for_rows_with_coefficients(fusion_results):
    coefficients = fusion_coefficients(load_records(fusion_results, SUITE))
    # both rows of a record carry the fuse stage's coefficients; the data-free method has none
    assert set(coefficients) == {LAYER_WISE, fused(LAYER_WISE), TASK_WISE, fused(TASK_WISE)}
    runs = sorted(coefficients[LAYER_WISE], key=lambda r: r["seed"])
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[1]["values"] == layer_values(1) and runs[1]["layers"] == LAYERS and runs[1]["tasks"] == TASKS
    assert runs[0]["method"] == "adamerging_layer" and runs[0]["transductive"] is False


@pytest.mark.parametrize(("broken", "reason"), [
    ("not an object", "fusion='not an object': Input should be a valid dictionary"),
    ({"params": {}}, "missing key 'fusion.method'"),
    ({"method": "adamerging_layer", "transductive": "yes"}, "fusion.transductive='yes': Input should be a valid boolean"),
    ({"method": "adamerging_layer", "coefficients": {"layers": LAYERS, "tasks": TASKS,
                                                    "values": layer_values(0)[:3]}},
     "fusion.coefficients: values has 3 rows, expected 4 (one per layer)"),
    ({"method": "adamerging_layer", "coefficients": {"layers": LAYERS, "tasks": TASKS,
                                                    "values": [[0.1], *layer_values(0)[1:]]}},
     "values row of layer 'embeddings.word_embeddings.weight' does not have 2 numbers"),
    ({"method": "adamerging_layer", "coefficients": {"layers": LAYERS, "tasks": TASKS,
                                                    "values": [[math.nan, 0.1], *layer_values(0)[1:]]}},
     "has a value that is not a finite number"),
    ({"method": "adamerging_layer", "coefficients": {"layers": [], "tasks": TASKS, "values": []}},
     "fusion.coefficients.layers: List should have at least 1 item"),
])
def test_malformed_fusion_skips_the_record_with_a_reason_naming_it(fusion_results, broken, reason):
    # json.dumps writes NaN as the bare token NaN, which json.loads reads back: the check must catch it
    bad = write_fusion_record(fusion_results, "fuse_then_joint[fusion=adamerging_layer,bad=1]", 0, broken)
    with pytest.warns(RecordWarning) as caught:
        records = load_records(fusion_results, SUITE)
    messages = [str(w.message) for w in caught if str(bad) in str(w.message)]
    assert len(messages) == 1
    assert "row 'fused': " in messages[0] and reason in messages[0]
    assert all(str(r.path) != str(bad) for r in records)
    assert any(r.label == LAYER_WISE for r in records)  # the well-formed ones are still read


# ----------------------------------------------------------------------------------------------- plots


def test_coefficient_matrix_is_the_mean_over_seeds_aligned_by_name():
    seeds = [{"seed": 0, "layers": ["a", "b"], "tasks": ["x", "y"], "values": [[0.0, 1.0], [1.0, 1.0]]},
             {"seed": 1, "layers": ["a", "b"], "tasks": ["x", "y"], "values": [[1.0, 1.0], [1.0, 1.0]]}]
    matrix = coefficient_matrix(seeds)
    np.testing.assert_allclose(matrix.mean, [[0.5, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(matrix.std, [[math.sqrt(0.5), 0.0], [0.0, 0.0]])  # ddof=1, as the leaderboard
    assert matrix.n == 2 and matrix.layers == ["a", "b"] and matrix.tasks == ["x", "y"]
    # a seed that lists its tasks in another order is aligned by name, not position
    reordered = {"seed": 1, "layers": ["a", "b"], "tasks": ["y", "x"], "values": [[1.0, 1.0], [1.0, 1.0]]}
    first = {"seed": 0, "layers": ["a", "b"], "tasks": ["y", "x"], "values": [[1.0, 0.0], [1.0, 1.0]]}
    matrix = coefficient_matrix([seeds[0], {**first, "seed": 2}])
    assert matrix.tasks == ["x", "y"]
    np.testing.assert_allclose(matrix.mean, [[0.0, 1.0], [1.0, 1.0]])  # a/x: 0 in both seeds, whatever the order
    np.testing.assert_allclose(coefficient_matrix([seeds[1], reordered]).mean, [[1.0, 1.0], [1.0, 1.0]])
    # one seed: no spread to show
    assert np.isnan(coefficient_matrix(seeds[:1]).std).all()


def test_the_heatmap_draws_the_mean_and_a_std_panel(fusion_results):
    records = load_records(fusion_results, SUITE)
    fig = coefficient_figure(SUITE, [LAYER_WISE], fusion_coefficients(records)[LAYER_WISE], records.styles)
    mean_image, std_image = (ax.images[0] for ax in fig.axes if ax.images)
    expected = (np.asarray(layer_values(0)) + np.asarray(layer_values(1))) / 2
    np.testing.assert_allclose(mean_image.get_array(), expected)
    np.testing.assert_allclose(std_image.get_array(), np.std([layer_values(0), layer_values(1)], axis=0, ddof=1))
    heatmap = next(ax for ax in fig.axes if ax.images)
    assert [t.get_text() for t in heatmap.get_xticklabels()] == TASKS
    assert len(heatmap.get_yticklabels()) == len(LAYERS)  # 4 rows: every one labelled
    assert "mean over 2 seeds" in fig.get_suptitle()


def test_task_wise_coefficients_are_bars_of_the_mean(fusion_results):
    records = load_records(fusion_results, SUITE)
    fig = coefficient_figure(SUITE, [TASK_WISE], fusion_coefficients(records)[TASK_WISE], records.styles)
    ax = fig.axes[0]
    assert not ax.images
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.35, 0.5])  # mean of 0.3 and 0.4; 0.5


def test_rows_sharing_a_fuse_stage_are_one_group():
    a = [{"seed": 0, "layers": ["l"], "tasks": ["x"], "values": [[0.2]]}]
    b = [{"seed": 0, "layers": ["l"], "tasks": ["x"], "values": [[0.3]]}]
    # grouped by content, not by name: any two rows with the same numbers (seed by seed) share a figure
    styles = Styles.of()  # no records: the built-in strategies' row order
    groups = coefficient_groups({"joint[x]": a, "fused[x]": copy.deepcopy(a), "other": b}, styles)
    assert groups == [["fused[x]", "joint[x]"], ["other"]]  # leaderboard order: the first names the figure
    other_seed = [{**a[0], "seed": 1}]
    assert len(coefficient_groups({"fused[x]": a, "fused[y]": other_seed}, styles)) == 2


def test_report_writes_one_heatmap_per_fuse_stage_and_none_for_data_free(fusion_results, tmp_path):
    paths = write_report(fusion_results, SUITE, tmp_path / "out")
    written = sorted(p.name for p in (tmp_path / "out").glob("coefficients_*"))
    # fused[...] and fuse_then_joint[...] of one label share the coefficients: one figure each, named by the first
    assert written == sorted(f"coefficients_{stem}.{ext}" for stem in
                             ("fused_fusion=adamerging_layer", "fused_fusion=adamerging_task") for ext in ("png", "pdf"))
    png = paths["coefficients_fused_fusion=adamerging_layer_png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["coefficients_fused_fusion=adamerging_layer_pdf"].read_bytes()[:5] == b"%PDF-"
    assert not any("ties" in name for name in paths)


def test_report_draws_coefficients_only_of_the_rows_shown(fusion_results, tmp_path):
    # strategy=<label> shows both rows of the task-wise records; the layer-wise ones are not shown, nor drawn
    write_report(fusion_results, SUITE, tmp_path / "out", strategies=[TASK_WISE])
    assert sorted(p.name for p in (tmp_path / "out").glob("coefficients_*.png")) == [
        "coefficients_fused_fusion=adamerging_task.png"]


def test_layer_labels_are_shortened_and_thinned():
    bert = ["backbone.embeddings.word_embeddings.weight", "backbone.encoder.layer.11.attention.output.dense.weight"]
    assert short_layer_names(bert) == ["embeddings.word_embeddings.weight", "encoder.lay.11.att.out.dense.weight"]
    assert short_layer_names(["blocks.0.conv.weight", "blocks.1.conv.weight"]) == ["blocks.0.conv.weight",
                                                                                    "blocks.1.conv.weight"]
    assert short_layer_names(["all"]) == ["all"]
    assert tick_step(4, 2.0) == 1
    step = tick_step(200, 13.5)
    assert step > 1 and math.ceil(200 / step) * 1.25 * 6 <= 13.5 * 72  # the labels that remain fit without overlap


# ----------------------------------------------------------------------------------------------- transductive


def test_transductive_rows_are_marked_and_the_caption_says_why(fusion_results, tmp_path):
    for seed in (0, 1):
        write_fusion_record(fusion_results, TRANSDUCTIVE, seed, fusion("adamerging_layer", seed, transductive=True))
    paths = write_report(fusion_results, SUITE, tmp_path / "out")
    marked = {TRANSDUCTIVE, fused(TRANSDUCTIVE)}
    boards, _ = build_leaderboards(fusion_results, SUITE)
    board = boards[0]
    assert set(board.transductive) == marked
    assert TRANSDUCTIVE_NOTE in caption(board)

    md_rows = {line.split(" | ")[0]: line for line in to_markdown(board).splitlines()[2:]}
    for name in board.table.index:
        expected = f"| `{name}` †" if name in marked else f"| `{name}`"
        assert expected in md_rows, name
    md = paths["md"].read_text()
    assert md.count(TRANSDUCTIVE_NOTE) == 2  # test and validation captions

    tex = to_latex(board)
    assert tex.count(r"$^{\dagger}$") == len(marked) + 1  # the two row names and the caption
    assert r"fused[fusion=adamerging\_layer,transductive=true]$^{\dagger}$ &" in tex

    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns[:3]) == ["split", "variant", "transductive"]
    assert set(csv.loc[csv["transductive"], "variant"]) == marked
    assert not csv.loc[csv["variant"] == LAYER_WISE, "transductive"].any()  # the inductive twin is not marked
    rows = json.loads(paths["json"].read_text())["splits"]["test"]
    assert {r["variant"] for r in rows if r["transductive"]} == marked

    console = Console(file=io.StringIO(), width=400, record=True)
    console.print(to_rich(board))
    text = console.export_text()
    assert f"{fused(TRANSDUCTIVE)} †" in text and f"{fused(LAYER_WISE)} †" not in text

    # its heatmap says so too
    records = load_records(fusion_results, SUITE)
    fig = coefficient_figure(SUITE, [fused(TRANSDUCTIVE)], fusion_coefficients(records)[TRANSDUCTIVE],
                             records.styles)
    assert "† transductive: adapted on unlabeled test inputs" in fig.get_suptitle()


def test_inductive_fusion_rows_leave_the_tables_unchanged(results, tmp_path):
    before = write_report(results, SUITE, tmp_path / "before")
    # the same records, now with an inductive fusion object on the fuse_then_joint rows
    for seed in (0, 1):
        path = results / SUITE / "cells" / "fuse_then_joint" / f"ftj{seed}" / "record.json"
        record = json.loads(path.read_text())
        for row in record["rows"].values():
            row["fusion"] = fusion("adamerging_layer", seed)
        path.write_text(json.dumps(record))
    after = write_report(results, SUITE, tmp_path / "after")
    for kind in ("md", "tex", "csv", "json"):
        assert after[kind].read_text() == before[kind].read_text(), kind
    assert "†" not in after["md"].read_text() and "dagger" not in after["tex"].read_text()
    assert "transductive" not in pd.read_csv(after["csv"]).columns
    assert set(after) - set(before) == {"coefficients_fused_weighting=gradnorm_png",
                                        "coefficients_fused_weighting=gradnorm_pdf"}
