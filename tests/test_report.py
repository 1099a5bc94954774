"""Leaderboards and plots from hand-written records (tests/fixtures/records/synthetic).

Fixture (test split; validation = test + 0.01 for max metrics, − 0.01 for mse), two seeds each:

    variant                              t0 accuracy  t0 macro_f1  r0 pearson  r0 mse (min)
    separate                             .78 / .82    .48 / .52    .45 / .55   .30 / .50
    naive_mtl                            .83 / .85    .54 / .56    .44 / .46   .45 / .55
    fused[weighting=gradnorm]            .75 / .77    .49 / .51    .49 / .51   .42 / .46
    fuse_then_joint[weighting=gradnorm]  .87 / .89    .58 / .62    .53 / .57   .28 / .32

plus an *older* naive_mtl seed-0 record with garbage scores that the newer one must replace. These are schema-1
records ("old records": no per-example predictions), so the tables have no intervals, tests or winner marks;
tests/test_report_stats.py covers schema 2.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import bench.report
from bench.errors import BenchError
from bench.report import build_leaderboards, report_command, write_report
from bench.report.leaderboard import build_leaderboard, caption, report_options, to_latex, to_markdown
from bench.report.plots import pareto_front
from bench.report.records import RecordWarning, load_records, variant_name
from bench.report.style import Styles

FIXTURES = Path(__file__).parent / "fixtures" / "records"
FTJ = "fuse_then_joint[weighting=gradnorm]"
FUSED = "fused[weighting=gradnorm]"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES, tmp_path / "results")
    return tmp_path / "results"


@pytest.fixture
def test_board(results: Path):
    return build_leaderboard(load_records(results, "synthetic"), "test")


def test_row_naming_rule():
    assert variant_name("naive_mtl", "naive_mtl") == "naive_mtl"
    assert variant_name("fused", "fuse_then_joint[fusion=ties]") == "fused[fusion=ties]"
    assert variant_name("fuse_then_joint", "fuse_then_joint[fusion=ties]") == "fuse_then_joint[fusion=ties]"
    assert variant_name("fused[fusion=mean]", "fuse_then_joint[fusion=ties]") == "fused[fusion=mean]"


def test_rows_in_strategy_order_and_newest_record_per_seed(test_board):
    assert list(test_board.table.index) == ["separate", "naive_mtl", FUSED, FTJ]
    assert test_board.table.loc["naive_mtl", "n"] == 2  # the older seed-0 re-run is replaced, not added
    assert test_board.table.loc["naive_mtl", "t0/accuracy"] == pytest.approx(84.0)


def test_mean_and_std_by_hand(test_board):
    t = test_board.table
    # separate accuracy: mean(78, 82) = 80; sample std = sqrt(((78-80)^2 + (82-80)^2) / (2-1)) = sqrt(8)
    assert t.loc["separate", "t0/accuracy"] == pytest.approx(80.0)
    assert t.loc["separate", "t0/accuracy:std"] == pytest.approx(math.sqrt(8.0))
    assert t.loc["separate", "t0/accuracy:n"] == 2
    # mse is lower-is-better and stays raw (no ×100): mean(.30, .50) = .40, std = sqrt(.01 + .01)
    assert t.loc["separate", "r0/mse"] == pytest.approx(0.40)
    assert t.loc["separate", "r0/mse:std"] == pytest.approx(math.sqrt(0.02))
    # Avg per seed over primaries (accuracy, pearson): seed 0 (78+45)/2 = 61.5, seed 1 (82+55)/2 = 68.5
    assert t.loc["separate", "avg"] == pytest.approx(65.0)
    assert t.loc["separate", "avg:std"] == pytest.approx(math.sqrt(2 * 3.5**2))
    # telemetry: mean over seeds; the fused row reports no training throughput
    assert t.loc["separate", "train_samples_per_s"] == pytest.approx(1100.0)
    assert math.isnan(t.loc[FUSED, "train_samples_per_s"])


def test_delta_m_over_the_primary_metrics_by_hand(test_board):
    # default delta_m=primary: Δm% over exactly the metrics the table shows (t0 accuracy, r0 pearson)
    dm = test_board.table["delta_m"]
    assert dm["naive_mtl"] == pytest.approx(100 / 2 * ((0.84 - 0.80) / 0.80 + (0.45 - 0.50) / 0.50))  # -2.5
    assert dm[FTJ] == pytest.approx(100 / 2 * ((0.88 - 0.80) / 0.80 + (0.55 - 0.50) / 0.50))  # +10
    assert dm[FUSED] == pytest.approx(100 / 2 * ((0.76 - 0.80) / 0.80 + 0))  # -2.5
    assert "over: t0 accuracy, r0 pearson." in caption(test_board)


def test_delta_m_by_hand_including_lower_is_better(results):
    board = build_leaderboard(load_records(results, "synthetic"), "test", report_options(delta_m="all"))
    dm = board.table["delta_m"]
    # B (separate means): accuracy .80, macro_f1 .50, pearson .50, mse .40
    # Δm = (100/T) Σ_t (1/M_t) Σ_m (−1)^l (N − B)/B, l = 1 for mse
    naive = 100 / 2 * ((0.84 - 0.80) / 0.80 + (0.55 - 0.50) / 0.50) / 2 \
        + 100 / 2 * ((0.45 - 0.50) / 0.50 - (0.50 - 0.40) / 0.40) / 2
    ftj = 100 / 2 * ((0.88 - 0.80) / 0.80 + (0.60 - 0.50) / 0.50) / 2 \
        + 100 / 2 * ((0.55 - 0.50) / 0.50 - (0.30 - 0.40) / 0.40) / 2
    fused = 100 / 2 * ((0.76 - 0.80) / 0.80 + 0) / 2 + 100 / 2 * (0 - (0.44 - 0.40) / 0.40) / 2
    assert (naive, ftj, fused) == pytest.approx((-5.0, 16.25, -3.75))
    assert dm["separate"] == 0.0
    assert dm["naive_mtl"] == pytest.approx(naive)
    assert dm[FTJ] == pytest.approx(ftj)  # the lower mse counts as an improvement
    assert dm[FUSED] == pytest.approx(fused)


def test_validation_table_is_second_and_has_its_own_baseline(results):
    boards, _ = build_leaderboards(results, "synthetic", options=report_options(delta_m="all"))
    assert [b.split for b in boards] == ["test", "validation"]
    val = boards[1].table
    assert val.loc["separate", "t0/accuracy"] == pytest.approx(81.0)
    assert val.loc["separate", "delta_m"] == 0.0
    # validation: separate acc .81 f1 .51 pearson .51 mse .39; naive acc .85 f1 .56 pearson .46 mse .49
    naive = 50 * ((0.85 - 0.81) / 0.81 + (0.56 - 0.51) / 0.51) / 2 + 50 * ((0.46 - 0.51) / 0.51 - 0.10 / 0.39) / 2
    assert val.loc["naive_mtl", "delta_m"] == pytest.approx(naive)


def test_no_separate_means_no_delta_m(results):
    shutil.rmtree(results / "synthetic" / "cells" / "separate")
    board = build_leaderboard(load_records(results, "synthetic"), "test")
    assert board.table["delta_m"].isna().all()
    assert board.score_column == "avg"


def test_latex_booktabs_no_untested_winners_best_cost_bold(test_board):
    tex = to_latex(test_board)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == 1
    lines = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line}
    ftj, naive, fused = lines[r"fuse\_then\_joint[weighting=gradnorm]"], lines[r"naive\_mtl"], lines[FUSED]
    # old records have no predictions: the best score is not a tested winner, so nothing is bold or underlined
    assert r"88.0{\scriptsize\,$\pm$\,1.4}" in ftj and r"\bfseries 88.0" not in ftj
    assert r"+10.00" in ftj and r"\bfseries +10.00" not in ftj and r"\underline" not in tex
    assert r"\bfseries 150" in fused and r"\bfseries 200" not in naive  # peak memory: lower is better
    assert r"$-$2.50" in naive
    assert r"\caption{Suite \texttt{synthetic}, backbone \texttt{mlp}, seeds \{0, 1\}" in tex
    assert r"budget epochs=3, max\_train\_samples=400" in tex
    assert "Peak mem (MB, host RSS)" in tex


def test_markdown_table(test_board):
    md = to_markdown(test_board).splitlines()
    assert md[0].startswith("| variant | n | t0 accuracy ↑ (%) | r0 pearson ↑ (%) | Avg ↑ (%) | Δm% ↑ | Samples seen |")
    assert md[1].startswith("|---|---:|")
    assert md[2] == ("| `separate` | 2 | 80.0 ± 2.8 | 50.0 ± 7.1 | 65.0 ± 4.9 | +0.00 | — | 1,100 ± 141 | 310 | 21.0 "
                     "| 20.0k |")
    assert "| 88.0 ± 1.4 |" in md[5] and "**88.0" not in md[5]  # no predictions: no significant winner
    assert "| **2,000 ± 283** |" in md[3]  # cost columns keep plain best-in-bold


@pytest.mark.integration
def test_write_report_files(results, tmp_path):
    paths = write_report(results, "synthetic", tmp_path / "out")
    for name in ("md", "tex", "csv", "json", "bars_test_png", "bars_test_pdf", "pareto_throughput_png",
                 "pareto_memory_png", "trajectories_png", "trajectories_pdf"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    for name, path in paths.items():
        if name.endswith("_png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if name.endswith("_pdf"):
            assert path.read_bytes()[:5] == b"%PDF-"
    payload = json.loads(paths["json"].read_text())
    assert payload["schema_version"] == 3 and payload["suite"] == "synthetic"
    assert payload["options"] == {"level": 0.95, "interval": "brackets", "delta_m": "primary", "correction": "holm",
                                  "correction_name": "Holm–Bonferroni", "min_seeds": 3, "budget_tolerance": 0.05,
                                  "power": 0.8}
    first = payload["splits"]["test"][0]
    assert first["variant"] == "separate" and first["delta_m"] == 0.0
    csv = pd.read_csv(paths["csv"])
    assert set(csv["split"]) == {"test", "validation"} and len(csv) == 8
    assert "## Validation" in paths["md"].read_text()


@pytest.mark.integration
def test_report_command_default_out_and_strategy_filter(results, capsys):
    assert report_command({"suite": "synthetic", "results_dir": str(results), "strategy": ["naive_mtl"]}) == 0
    out = capsys.readouterr().out
    assert "naive_mtl" in out and "leaderboard.md" in out
    md = (results / "synthetic" / "report" / "leaderboard.md").read_text()
    assert "`naive_mtl`" in md and "`separate`" not in md
    assert "| -2.50 |" in md  # Δm% still measured against separate, though separate is not shown


def test_unknown_strategy_filter(results):
    with pytest.raises(BenchError, match="did you mean 'naive_mtl'"):
        report_command({"suite": "synthetic", "results_dir": str(results), "strategy": ["naive_mt"]})


def test_no_records_says_which_command_produces_them(tmp_path):
    with pytest.raises(BenchError, match=r"no records for suite 'nothing'.*`python -m bench run suite=nothing`"):
        report_command({"suite": "nothing", "results_dir": str(tmp_path)})


@pytest.mark.integration
def test_corrupted_record_is_named_skipped_and_the_rest_reported(results, tmp_path):
    bad = results / "synthetic" / "cells" / "separate" / "sep1" / "record.json"
    bad.write_text('{"schema_version": 1, "suite": "synth')
    foreign = results / "synthetic" / "cells" / "separate" / "sep0x" / "record.json"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({**json.loads((bad.parent.parent / "sep0" / "record.json").read_text()),
                                   "suite": "other"}))
    with pytest.warns(RecordWarning) as caught:
        paths = write_report(results, "synthetic", tmp_path / "out")
    messages = [str(w.message) for w in caught]
    assert any(str(bad) in m and "unreadable" in m for m in messages)
    assert any(str(foreign) in m and "suite 'other'" in m for m in messages)
    md = paths["md"].read_text()
    assert "| `separate` | 1 | 78.0 |" in md  # one seed left, no std


def test_the_report_keeps_no_state_between_reports():
    """Row styles live in a read-only Styles per load, never in the modules: no memo, no lower-case table."""
    for info in pkgutil.walk_packages(bench.report.__path__, "bench.report."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) == module.__name__:
                assert not hasattr(value, "cache_info"), f"{module.__name__}.{name} memoises per process"
            if isinstance(value, (dict, list, set)) and not name.startswith("__"):
                assert re.fullmatch(r"_?[A-Z][A-Z0-9_]*", name), f"{module.__name__}.{name}: module-level state"
    styles = Styles.of()
    with pytest.raises(TypeError):
        styles.kinds["zz_new"] = styles.kinds["separate"]  # type: ignore[index]
    assert "zz_new" not in Styles.of().kinds


def test_colours_fixed_per_strategy_and_pareto_front():
    colour = Styles.of().colour
    assert colour("fused[weighting=gradnorm]") == colour("fused") != colour("fuse_then_joint")
    assert colour("separate") == "#000000"
    assert colour("my_new_strategy") == colour("my_new_strategy[x=1]")
    xs = pd.Series([1100.0, 2000.0, 1550.0, 1000.0]).to_numpy()
    ys = pd.Series([0.0, -5.0, 16.25, -1.0]).to_numpy()
    assert pareto_front(xs, ys, "max").tolist() == [False, True, True, False]
    assert pareto_front(xs, ys, "min").tolist() == [True, False, True, True]


@pytest.mark.integration
def test_old_schema_1_records_report_without_intervals_and_say_why(results, tmp_path):
    paths = write_report(results, "synthetic", tmp_path / "out")
    note = (f"rows separate, naive_mtl, {FUSED}, {FTJ}: no per-example predictions (records older than schema 2): "
            "no intervals")
    md = paths["md"].read_text()
    assert note in md and note in json.loads(paths["json"].read_text())["notes"]
    assert "Mean ± std over seeds (n per row); fractions ×100, mse raw; no intervals, tests or significance marks" in md
    assert "*:" not in md and "MDE" not in md
    csv = pd.read_csv(paths["csv"])
    for column in ("t0/accuracy:lo", "t0/accuracy:hi", "t0/accuracy:p", "t0/accuracy:p_adj", "avg:p", "delta_m:lo"):
        assert csv[column].isna().all(), column  # the same columns as with predictions, empty
    assert csv["train_samples_seen"].isna().all()  # schema 1 has no per-row budget


def test_schema_1_rows_of_one_label_with_two_budgets_are_two_rows(results):
    path = results / "synthetic" / "cells" / "naive_mtl" / "nmtl1" / "record.json"
    record = json.loads(path.read_text())
    record["budget"]["epochs"] = 5
    path.write_text(json.dumps(record))
    board = build_leaderboard(load_records(results, "synthetic"), "test")
    assert {"naive_mtl[train.epochs=3]", "naive_mtl[train.epochs=5]"} <= set(board.table.index)
    assert "naive_mtl" not in board.table.index
    assert board.table.loc["naive_mtl[train.epochs=3]", "n"] == 1
    assert board.table.loc["naive_mtl[train.epochs=3]", "t0/accuracy"] == pytest.approx(83.0)  # seed 0 alone, not mixed
    assert board.table.loc["naive_mtl[train.epochs=3]", "baseline"] == "separate"  # same budget and data as separate
    assert math.isnan(board.table.loc["naive_mtl[train.epochs=5]", "delta_m"])
    assert any(n.startswith("Δm% empty for naive_mtl[train.epochs=5]: no separate row with the same budget (train.epochs=5)")
               for n in board.notes)
