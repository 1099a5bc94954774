"""Per-group Δm% columns of the leaderboard (``delta_m@<group>``, bench/report/groups.py).

The records come from a real tiny run: the synthetic suite written to a temporary YAML copy whose regression tasks
are ``group: regression`` and classification tasks ``group: classification``, three seeds of separate and naive MTL
with matched budgets (so naive MTL may carry marks). Each per-group column is checked against a hand computation from
the records' metrics, against the overall Δm% of a board built from the same records cut down to the group's tasks
(the same two-level formula on the subset), and for its correction family; a one-group run has no extra column.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console

from bench import stats
from bench.cli import main
from bench.record import Record
from bench.report import build_leaderboards
from bench.report.groups import board_groups, declared_groups, task_groups
from bench.report.leaderboard import build_leaderboard, compare_rows, report_options, to_rich, write_tables
from bench.report.records import load_records
from bench.suites import validate_suite

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parent.parent
GROUPS = {"clean": "regression", "medium": "regression", "noisy": "regression",
          "cls3": "classification", "cls2": "classification"}
QUICK = ["strategy=separate,naive_mtl", "train.epochs=1", "train.max_train_samples=300", "report=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A grouped copy of the synthetic suite, run at 3 seeds (budgets matched), and a one-group subset at 1 seed."""
    root = tmp_path_factory.mktemp("groups")
    suite = yaml.safe_load((REPO / "suites" / "synthetic.yaml").read_text())
    suite["name"] = "grouped"
    for task in suite["tasks"]:
        task["group"] = GROUPS[task["name"]]
    path = root / "grouped.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    results = root / "results"
    assert main(["run", f"suite={path}", *QUICK, "seeds=3", "budget.match=samples", f"results_dir={results}"]) == 0
    one = root / "one" / "results"
    assert main(["run", f"suite={path}", *QUICK, "tasks=[cls3,cls2]", f"results_dir={one}"]) == 0
    return {"suite": path, "results": results, "one": one, "root": root}


def _board(results: Path, **options):
    boards, _ = build_leaderboards(results, "grouped", options=report_options(**options))
    return boards[0]


def _means(results: Path) -> dict[str, dict[str, float]]:
    """Row -> task -> mean over seeds of the test primary metric, read from the record files themselves."""
    values: dict[str, dict[str, list[float]]] = {}
    for path in sorted(results.glob("grouped/cells/*/*/record.json")):
        record = json.loads(path.read_text())
        for row, data in record["rows"].items():
            for task, info in record["tasks"].items():
                values.setdefault(row, {}).setdefault(task, []).append(data["metrics"]["test"][task][info["primary"]])
    return {row: {t: float(np.mean(v)) for t, v in tasks.items()} for row, tasks in values.items()}


def test_records_carry_each_task_group_and_the_board_groups_them(store):
    records = load_records(store["results"], "grouped")
    assert {t: i.group for t, i in records[0].tasks.items()} == GROUPS
    board = _board(store["results"])
    assert board.groups == {"regression": ("clean", "medium", "noisy"), "classification": ("cls3", "cls2")}
    assert board.score_keys()[-3:] == ["delta_m", "delta_m@regression", "delta_m@classification"]


def test_group_delta_m_equals_a_hand_computation_from_the_records(store):
    means = _means(store["results"])
    board = _board(store["results"])
    directions = {t: board.tasks[t]["metrics"][board.tasks[t]["primary"]] for t in GROUPS}
    for group in ("regression", "classification"):
        tasks = [t for t, g in GROUPS.items() if g == group]
        terms = [(1 if directions[t] == "max" else -1) * (means["naive_mtl"][t] - means["separate"][t])
                 / abs(means["separate"][t]) for t in tasks]
        assert board.table.loc["naive_mtl", f"delta_m@{group}"] == pytest.approx(100 * np.mean(terms), abs=1e-9)
        assert board.table.loc["separate", f"delta_m@{group}"] == 0.0
    # the overall Δm% is the task-weighted mean of the groups' (3 regression, 2 classification tasks)
    row = board.table.loc["naive_mtl"]
    assert row["delta_m"] == pytest.approx((3 * row["delta_m@regression"] + 2 * row["delta_m@classification"]) / 5)


def _subset(records: list[Record], tasks: list[str]) -> list[Record]:
    """The records with only ``tasks`` (their metrics and predictions kept as they are)."""
    out = []
    for record in records:
        data = record.dump()
        data["tasks"] = {t: v for t, v in data["tasks"].items() if t in tasks}
        for row in data["rows"].values():
            row["metrics"] = {s: {t: v for t, v in m.items() if t in tasks} for s, m in row["metrics"].items()}
            row["predictions"] = {s: {t: v for t, v in m.items() if t in tasks}
                                  for s, m in (row.get("predictions") or {}).items()}
        cut = Record(**data)
        cut._path = record.path  # predictions are found next to the record's store
        out.append(cut)
    return out


@pytest.mark.parametrize("group", ["regression", "classification"])
def test_group_interval_and_test_are_the_overall_ones_on_the_group_tasks(store, group):
    records = load_records(store["results"], "grouped")
    full = build_leaderboard(records, "test")
    tasks = [t for t, g in GROUPS.items() if g == group]
    cut = build_leaderboard(_subset(records, tasks), "test")
    assert not cut.groups  # one group left: no per-group column
    key = f"delta_m@{group}"
    for row in ("separate", "naive_mtl"):
        for suffix in ("", ":lo", ":hi", ":seed_sd", ":test_se", ":df"):
            mine, overall = full.table.loc[row, key + suffix], cut.table.loc[row, "delta_m" + suffix]
            assert mine == pytest.approx(overall, rel=1e-12, abs=1e-12), (row, suffix)
    assert full.table.loc["naive_mtl", key + ":p"] == pytest.approx(cut.table.loc["naive_mtl", "delta_m:p"],
                                                                    rel=1e-12)
    assert full.table.loc["naive_mtl", key + ":test"] == cut.table.loc["naive_mtl", "delta_m:test"] == "paired t"
    lo, hi = full.table.loc["naive_mtl", [key + ":lo", key + ":hi"]]
    assert lo < full.table.loc["naive_mtl", key] < hi


def test_group_tests_are_a_correction_family_of_their_own(store):
    board = _board(store["results"])
    t = board.table
    assert "naive_mtl" not in board.marking.unmarked  # 3 seeds, matched budgets: markable
    groups = ["delta_m@regression", "delta_m@classification"]
    main_keys = [k for k in board.score_keys() if k not in groups]
    main_p = [t.loc["naive_mtl", k + ":p"] for k in main_keys]
    assert np.allclose([t.loc["naive_mtl", k + ":p_adj"] for k in main_keys], stats.adjust(main_p, "holm"))
    group_p = [t.loc["naive_mtl", k + ":p"] for k in groups]
    assert np.allclose([t.loc["naive_mtl", k + ":p_adj"] for k in groups], stats.adjust(group_p, "holm"))
    assert (board.marking.n_tests, board.marking.n_group_tests) == (len(main_keys), 2)
    # the table's own columns are marked as they would be without the per-group columns
    cut = build_leaderboard(_without_groups(load_records(store["results"], "grouped")), "test")
    assert not cut.groups
    for k in main_keys:
        assert t.loc["naive_mtl", k + ":p_adj"] == pytest.approx(cut.table.loc["naive_mtl", k + ":p_adj"])


def _without_groups(records: list[Record]) -> list[Record]:
    out = []
    for record in records:
        data = record.dump()
        for info in data["tasks"].values():
            info.pop("group", None)
        plain = Record(**data)
        plain._path = record.path
        out.append(plain)
    return out


def test_no_group_mark_below_min_seeds(store):
    board = _board(store["results"], min_seeds=4)
    row = board.table.loc["naive_mtl"]
    assert "seeds" in board.marking.unmarked["naive_mtl"]
    assert board.marking.n_group_tests == 0
    assert not row["delta_m@classification:markable"] and math.isnan(row["delta_m@classification:p_adj"])
    assert not math.isnan(row["delta_m@classification:p"])  # the p-value is still shown
    assert "*" not in row["delta_m@classification:mark"] + row["delta_m@regression:mark"]


def test_every_output_has_the_group_columns(store, tmp_path):
    boards, _ = build_leaderboards(store["results"], "grouped")
    md = write_tables(boards, tmp_path)["md"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert "| Δm% ↑ | Δm% regression ↑ | Δm% classification ↑ |" in header
    assert "Δm% <group> (regression: clean, medium, noisy; classification: cls3, cls2)" in md
    assert re.search(r"over their own 2 tests, a family apart from the table's", md)
    tex = (tmp_path / "leaderboard.tex").read_text()
    assert r"$\Delta_m$ regression (\%) $\uparrow$" in tex and "per group over that group's tasks" in tex
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    for suffix in ("", ":lo", ":hi", ":p", ":p_adj", ":test", ":mark"):
        assert f"delta_m@classification{suffix}" in csv.columns
    payload = json.loads((tmp_path / "leaderboard.json").read_text())
    assert payload["boards"]["test"]["groups"] == {"regression": ["clean", "medium", "noisy"],
                                                   "classification": ["cls3", "cls2"]}
    assert payload["boards"]["test"]["n_group_tests"] == 2 and "delta_m@<group>" in payload["units"]
    console = Console(width=400, record=True)
    console.print(to_rich(boards[0]))
    assert "Δm% classification" in console.export_text()


def test_one_group_board_has_no_group_columns(store, tmp_path):
    records = load_records(store["one"], "grouped")
    assert all(info.group is None for info in records[0].tasks.values())  # one group: the record says nothing
    assert task_groups(records) == ({}, [])
    write_tables(build_leaderboards(store["one"], "grouped")[0], tmp_path)
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "leaderboard.json"):
        text = (tmp_path / name).read_text()
        assert "delta_m@" not in text and "Δm% <group>" not in text and "per group" not in text, name


def test_records_that_name_only_the_input_kind_group_by_it(store):
    records = load_records(store["results"], "grouped")
    data = records[0].dump()
    for task, info in data["tasks"].items():
        info.pop("group")
        info["input"] = "image" if task.startswith("cls") else "text"  # an older writer's modality field
    groups, notes = task_groups([Record(**data)])
    assert groups == {"clean": "text", "medium": "text", "noisy": "text", "cls3": "image", "cls2": "image"}
    assert notes == []
    assert board_groups(["clean", "cls3"], {"clean": "text"}) == {}  # a task of unknown group: no columns


def test_groups_the_suite_yaml_declares_win_and_decide_no_result(store):
    records = load_records(store["one"], "grouped")  # one group: the records name none
    board = build_leaderboard(records, "test", declared={"cls3": "three", "cls2": "two"})
    assert board.groups == {"three": ("cls3",), "two": ("cls2",)}
    assert board.table.loc["naive_mtl", "delta_m@three"] == pytest.approx(
        build_leaderboard(_subset(records, ["cls3"]), "test").table.loc["naive_mtl", "delta_m"])
    # a group is read by the report only: it is not part of the configuration that keys cells and rows
    raw = yaml.safe_load(store["suite"].read_text())
    plain = {**raw, "tasks": [{k: v for k, v in t.items() if k != "group"} for t in raw["tasks"]]}
    assert validate_suite(raw, "x").results_dump() == validate_suite(plain, "x").results_dump()
    assert declared_groups(raw["tasks"]) == GROUPS


def test_compare_shows_each_group(store):
    board = _board(store["results"])
    frame = compare_rows(board, "naive_mtl", "separate").set_index("column")
    row = frame.loc["Δm% classification"]
    assert row["difference"] == pytest.approx(board.table.loc["naive_mtl", "delta_m@classification"])
    assert row["test"] == "paired t"
