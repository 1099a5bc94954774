"""Rows whose balancer degenerated (``Balancer.flag``) carry ``§`` and a footnote saying how often, on every
renderer of the leaderboard; rows without events carry nothing and boards without any keep their columns.

* a real run of ``synthetic_conflict`` with a plug-in weighting written here, whose flags are counted by hand;
* hand-made records (the schema-1 fixture of tests/test_report.py with events added) through the board builder;
* :func:`bench.stages.make_row` summing a row's training stages.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from bench.cli import main
from bench.record import Row
from bench.report.leaderboard import build_leaderboard, to_frame, to_json, to_latex, to_markdown, to_rich
from bench.report.leaderboard.degenerate import percent
from bench.report.records import load_records
from bench.stages import Checkpoint, Outcome, make_row

FIXTURES = Path(__file__).parent / "fixtures" / "records"
FTJ = "fuse_then_joint[weighting=gradnorm]"

# equal weights (the losses summed) that flag "fallback" on the 1st, 4th, 7th... step of a stage and an event the
# report does not know on its first step
PLUGIN = textwrap.dedent('''
    import torch

    from bench.weighting import Weighting, register_weighting


    @register_weighting("flaky_equal")
    class FlakyEqual(Weighting):
        """Equal weights that say they fell back every third step."""

        def combine(self, losses):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls % 3 == 1:
                self.flag("fallback")
            if self.calls == 1:
                self.flag("odd_event")
            return torch.stack(list(losses.values())).sum()
''')


@pytest.mark.integration
def test_a_real_run_footnotes_the_flagging_row_with_counts_by_hand(tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flaky_equal.py").write_text(PLUGIN)
    results = tmp_path / "results"
    rc = main(["run", "suite=synthetic_conflict", "strategy=naive_mtl", "strategy.weighting=equal,flaky_equal",
               "train.epochs=1", "seeds=2", f"plugin_dirs=[{plugins}]", f"results_dir={results}", "report=false"])
    assert rc == 0, capsys.readouterr().err

    # 3000 examples: 600 test, 15% of the other 2400 validation, 2040 train -> ceil(2040/64) = 32 steps per seed;
    # "fallback" on steps 1, 4, ..., 31: 11 per seed; "odd_event" on step 1 only
    rows = {}
    for path in results.rglob("record.json"):
        record = json.loads(path.read_text())
        rows[(record["label"], record["seed"])] = record["rows"]["naive_mtl"]
    flaky, equal = "naive_mtl[weighting=flaky_equal]", "naive_mtl[weighting=equal]"
    for seed in (0, 1):
        assert rows[(flaky, seed)]["spent"]["optimizer_steps"] == 32
        assert rows[(flaky, seed)]["telemetry"]["degenerate"] == {"fallback": 11, "odd_event": 1}
        assert "degenerate" not in rows[(equal, seed)]["telemetry"]  # no event: the record is as it always was

    rc = main(["report", "suite=synthetic_conflict", f"results_dir={results}", f"out={tmp_path / 'report'}",
               "plots=false", f"plugin_dirs=[{plugins}]"])
    assert rc == 0, capsys.readouterr().err
    footnote = (f"§ {flaky}: fell back to another update (its solver failed) in 22 of 64 steps (34%) in 2 of 2 "
                f"seeds; flagged `odd_event` in 2 of 64 steps (3.1%) in 2 of 2 seeds")
    md = (tmp_path / "report" / "leaderboard.md").read_text()
    assert md.count(f"- Note: {footnote}\n") == 2  # the test and the validation board
    assert md.count(f"| `{flaky}` § |") == 2 and md.count(f"| `{equal}` |") == 2 and md.count("§") == 4

    csv = pd.read_csv(tmp_path / "report" / "leaderboard.csv").set_index(["split", "variant"])
    assert csv.loc[("test", flaky), ["degenerate:fallback", "degenerate:fallback:seeds", "degenerate:odd_event",
                                     "degenerate:odd_event:seeds", "degenerate:steps"]].tolist() == [22, 2, 2, 2, 64]
    assert csv.loc[("test", equal), ["degenerate:fallback", "degenerate:odd_event", "degenerate:steps"]].tolist() \
        == [0, 0, 64]
    board = json.loads((tmp_path / "report" / "leaderboard.json").read_text())
    assert footnote in board["boards"]["test"]["notes"]
    tex = (tmp_path / "report" / "leaderboard.tex").read_text()
    assert tex.count(r"naive\_mtl[weighting=flaky\_equal]$^{\S}$ &") == 2
    assert r"$^{\S}$ naive\_mtl[weighting=flaky\_equal]: fell back" in tex
    assert r"flagged \texttt{odd\_event} in 2 of 64 steps (3.1\%)" in tex


@pytest.fixture
def degenerate_records(tmp_path: Path) -> Path:
    """The schema-1 fixture with events: fuse_then_joint's row flags fallback 3+2 and not_converged 1 (of 100 steps
    per seed); naive_mtl's seed 1 an event the report does not know, in a row that does not say its steps."""
    results = tmp_path / "results"
    shutil.copytree(FIXTURES, results)
    cells = results / "synthetic" / "cells"
    for cell, row, events, steps in (("fuse_then_joint/ftj0", "fuse_then_joint", {"fallback": 3, "not_converged": 1},
                                      100),
                                     ("fuse_then_joint/ftj1", "fuse_then_joint", {"fallback": 2}, 100),
                                     ("naive_mtl/nmtl1", "naive_mtl", {"my_event": 7}, None)):
        path = cells / cell / "record.json"
        record = json.loads(path.read_text())
        record["rows"][row]["telemetry"]["degenerate"] = events
        if steps is not None:
            record["rows"][row]["spent"] = {"optimizer_steps": steps}
        path.write_text(json.dumps(record))
    return results


def test_the_board_footnotes_each_degenerate_row_summed_over_seeds(degenerate_records: Path):
    board = build_leaderboard(load_records(degenerate_records, "synthetic"), "test")
    assert board.degenerate == ("naive_mtl", FTJ)  # in the table's order
    notes = [n for n in board.notes if n.startswith("§")]
    assert notes == [
        "§ naive_mtl: flagged `my_event` in 7 steps in 1 of 2 seeds",
        f"§ {FTJ}: fell back to another update (its solver failed) in 5 of 200 steps (2.5%) in 2 of 2 seeds; "
        "stopped its solver before it converged in 1 of 200 steps (0.50%) in 1 of 2 seeds",
    ]
    md = to_markdown(board)
    assert f"| `{FTJ}` § |" in md and "| `naive_mtl` § |" in md
    assert "| `separate` |" in md and "| `fused[weighting=gradnorm]` |" in md  # no event: no mark

    frame = to_frame([board]).set_index("variant")
    assert frame.loc[FTJ, ["degenerate:fallback", "degenerate:fallback:seeds", "degenerate:not_converged",
                           "degenerate:not_converged:seeds", "degenerate:my_event", "degenerate:steps"]].tolist() \
        == [5, 2, 1, 1, 0, 200]
    assert frame.loc["separate", ["degenerate:fallback", "degenerate:my_event"]].tolist() == [0, 0]
    assert math.isnan(frame.loc["naive_mtl", "degenerate:steps"])  # a record that does not say its steps
    assert "degenerate:<event>" in json.loads(to_json([board]))["units"]

    tex = to_latex(board)
    assert r"fuse\_then\_joint[weighting=gradnorm]$^{\S}$ &" in tex and r"separate &" in tex
    assert r"$^{\S}$ naive\_mtl: flagged \texttt{my\_event} in 7 steps in 1 of 2 seeds." in tex
    console = Console(file=io.StringIO(), width=400, record=True)
    console.print(to_rich(board))
    text = console.export_text()
    assert f"{FTJ} §" in text and "naive_mtl §" in text and "separate §" not in text


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex")
def test_the_marked_latex_table_compiles(degenerate_records: Path, tmp_path: Path):
    board = build_leaderboard(load_records(degenerate_records, "synthetic"), "test")
    (tmp_path / "leaderboard.tex").write_text(to_latex(board))
    (tmp_path / "paper.tex").write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
                                        "\\usepackage{graphicx}\n\\begin{document}\n\\input{leaderboard.tex}\n"
                                        "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert done.returncode == 0, log[-2000:]
    assert "Undefined control sequence" not in log and "Unicode character" not in log


def test_a_board_without_events_keeps_its_columns_and_names(degenerate_records: Path):
    board = build_leaderboard(load_records(degenerate_records, "synthetic"), "test",
                              variants=["separate", "fused[weighting=gradnorm]"])
    assert board.degenerate == () and not any("§" in n for n in board.notes)
    assert not [c for c in board.table.columns if c.startswith("degenerate")]
    assert "§" not in to_markdown(board) and r"$^{\S}$" not in to_latex(board)
    assert "degenerate" not in json.loads(to_json([board]))["units"]


def test_percent_keeps_two_significant_digits_and_never_rounds_to_0_or_100():
    assert [percent(37, 1200), percent(1, 1200), percent(600, 1200), percent(1200, 1200)] == \
        ["3.1%", "0.083%", "50%", "100%"]
    assert [percent(1, 10**6), percent(1199, 1200)] == ["<0.01%", ">99%"]


def _trained(stage: str, steps: int, degenerate: dict[str, int] | None) -> Outcome:
    telemetry = {"wall_time_s": 1.0, "train_samples": 64 * steps, "train_time_s": 1.0, "trainable_params": 10,
                 "peak_memory_mb": 1.0, "memory_kind": "host_rss", "device": "cpu", "step_time_ms": 1.0,
                 "steps": steps}
    if degenerate is not None:
        telemetry["degenerate"] = degenerate
    return Outcome(Checkpoint(stage, f"k-{stage}", Path("nowhere"), (stage,)),
                   {"metrics": {"test": {stage: {"accuracy": 0.5}}}, "telemetry": telemetry})


def test_a_row_sums_the_degenerate_steps_of_its_training_stages_and_omits_none():
    tune = _trained("finetune", 10, {"not_converged": 2})
    joint = _trained("joint", 30, {"fallback": 4, "not_converged": 1})
    row = make_row(tune, joint)
    assert row.telemetry.degenerate == {"fallback": 4, "not_converged": 3}
    assert row.spent["optimizer_steps"] == 40  # the footnote's steps: every training stage of the row
    clean = make_row(_trained("finetune", 10, None), _trained("joint", 30, None))
    assert "degenerate" not in clean.model_dump(mode="json", exclude_unset=True)["telemetry"]
    assert Row.of(row.model_dump(mode="json", exclude_unset=True)).telemetry.degenerate == row.telemetry.degenerate
