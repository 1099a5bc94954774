"""Figures and tables fit for a paper (issue 26, item 5), on a real synthetic store.

* the LaTeX table compiles in a two-column article with booktabs and graphicx (skipped without ``pdflatex``), fits
  the text width, keeps its statistics in a short footnote, and ``columns=scores`` leaves the costs out;
* the cost columns split wall time into own and shared, parameters into deployed and trained, from the rows' stage
  provenance, and the caption says what each counts;
* rows whose scores are identical to another row's get a note, and why (the same stage keys);
* the loss curves show every task of every row, over epochs of every training stage;
* a search's summary gives the best trial's margin over the baseline trial with an interval.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.report import build_leaderboards, report_options, write_report
from bench.report.leaderboard import caption, to_latex, to_markdown
from bench.report.leaderboard.render_tex import footnote
from bench.report.plots.training import trajectory_figure
from bench.report.records import load_records, trajectories
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SUITE = "synthetic"
TASKS = ["clean", "medium", "noisy", "cls3", "cls2"]
# 7 steps per epoch (400 examples, batch 64): log every 2 steps so that the curves have points
RUN = ["suite=synthetic", "train.epochs=2", "train.max_train_samples=400", "train.log_every=2", "report=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("paper") / "results"
    for extra in (["strategy=separate,naive_mtl,fuse_then_joint"], ["strategy=naive_mtl", "label=naive_aa"]):
        done = run_cli("run", *RUN, "seeds=1", f"results_dir={results}", *extra)
        assert done.returncode == 0, done.stderr[-2000:]
    return results


@pytest.fixture(scope="module")
def board(store):
    boards, _ = build_leaderboards(store, SUITE)
    return boards[0]


# ----------------------------------------------------------------------------------------------- cost columns


def test_wall_time_is_own_plus_shared_and_shared_means_another_row_uses_the_stage(board):
    t = board.table
    for row in t.index:
        assert t.loc[row, "wall_own_s"] + t.loc[row, "wall_shared_s"] == pytest.approx(t.loc[row, "wall_time_s"])
    # separate's fine-tunes are fuse_then_joint's too: all of separate's time is shared, its own is nothing
    assert t.loc["separate", "wall_own_s"] == 0 and t.loc["separate", "wall_shared_s"] > 0
    assert t.loc["fuse_then_joint", "wall_own_s"] > 0  # its joint phase
    assert t.loc["fuse_then_joint", "wall_shared_s"] >= t.loc["separate", "wall_shared_s"]  # + the fuse stage
    # naive_aa is naive_mtl under another label: the same stages, so both count them as shared
    assert t.loc["naive_mtl", "wall_own_s"] == 0 and t.loc["naive_aa", "wall_own_s"] == 0


def test_deployed_and_trained_parameters(board):
    t = board.table
    one = t.loc["naive_mtl", "deployed_params"]  # one backbone and five heads
    assert one == t.loc["naive_mtl", "trainable_params"] == t.loc["fused", "deployed_params"]
    assert t.loc["fuse_then_joint", "deployed_params"] == one
    # separate deploys five models (one per task): five backbones, each with its own head
    assert t.loc["separate", "deployed_params"] == t.loc["separate", "trainable_params"] > 4 * one
    # fuse_then_joint trained the five fine-tunes and the joint model
    assert t.loc["fuse_then_joint", "trainable_params"] == t.loc["separate", "trainable_params"] + one


def test_the_caption_says_what_the_cost_columns_count(board):
    md = to_markdown(board).splitlines()[0]
    for header in ("Wall own (s)", "Wall shared (s)", "Params deployed", "Params trained"):
        assert header in md
    assert "| Wall (s) |" not in md and "| Params |" not in md
    text = caption(board)
    assert "Wall own: seconds of the stages only this row uses" in text
    assert "Params deployed: the model(s) that serve the tasks (separate: one per task)" in text
    assert "Params deployed" in caption(board, latex=True)


# ----------------------------------------------------------------------------------------------- columns=


def test_columns_scores_leaves_the_costs_to_the_files(store, tmp_path):
    paths = write_report(store, SUITE, tmp_path / "out", columns="scores")
    md = [line for line in paths["md"].read_text().splitlines() if line.startswith("| variant")]
    tex = [line for line in paths["tex"].read_text().splitlines() if not line.startswith("%")]  # not the comments
    assert md and tex
    for header in ("Samples seen", "Train (samples/s)", "Peak mem", "Wall own", "Params deployed"):
        assert not any(header in line for line in md + tex)
    assert not any("Costs" in line for line in tex) and "Wall own:" not in paths["md"].read_text()
    csv = pd.read_csv(paths["csv"])
    assert {"wall_own_s", "wall_shared_s", "deployed_params", "trainable_params", "wall_time_s"} <= set(csv.columns)


def test_a_bad_columns_value_is_one_line(store, capsys):
    with pytest.raises(BenchError, match=r"^columns='costs': valid are all .* e\.g\. columns=scores$"):
        report_options(columns="costs")
    assert main(["report", f"suite={SUITE}", f"results_dir={store}", "columns=costs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "columns='costs'" in err[0]


# ----------------------------------------------------------------------------------------------- LaTeX


def test_latex_is_a_table_star_with_a_short_caption_and_a_footnote(board):
    tex = to_latex(board)
    assert r"\begin{table*}" in tex and r"\end{table*}" in tex
    assert r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}{%" in tex
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    cap = re.search(r"\\caption\{(.*)\}\n", tex).group(1)
    assert "two-level" not in cap and "Holm" not in cap  # the statistics are in the footnote
    note = footnote(board)
    assert "test-set interval" in note and "one seed" in note and len(note.split()) < 160  # seeds=1
    assert all(ord(c) < 128 for line in tex.splitlines() if not line.startswith("%") for c in line)
    assert "Scores" in tex and "Costs" in tex and r"\rotatebox{90}{Params deployed}" in tex


def test_identical_rows_get_a_note_that_says_why(board):
    notes = [n for n in board.notes if "identical scores" in n]
    assert notes == ["rows naive_mtl, naive_aa: identical scores in every task column; their records list the same "
                     "stage keys for every seed: the same trained models under other names (an A/A copy with the "
                     "same seeds is one), not an independent replication"]
    tex = to_latex(board)
    assert r"\llap{$^{\mathrm{a}}$}naive\_mtl &" in tex and r"\llap{$^{\mathrm{a}}$}naive\_aa &" in tex
    assert r"$^{\mathrm{a}}$naive\_mtl, naive\_aa: identical scores" in tex


def _compile(tex_file: Path, folder: Path) -> str:
    (folder / "leaderboard.tex").write_text(tex_file.read_text())
    body = " ".join(["Multi-task fine-tuning shares one backbone between tasks."] * 40)
    (folder / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n{body}\n\\input{{leaderboard.tex}}\n{body}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    log = (folder / "paper.log").read_text(errors="replace")
    assert done.returncode == 0, log[-3000:]
    assert (folder / "paper.pdf").read_bytes()[:5] == b"%PDF-"
    return log


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (apt-get install texlive-latex-base "
                                                               "texlive-latex-recommended)")
@pytest.mark.parametrize("columns", ["all", "scores"])
def test_the_tex_compiles_in_a_two_column_paper_and_fits(store, tmp_path, columns):
    paths = write_report(store, SUITE, tmp_path / "out", columns=columns)
    log = _compile(paths["tex"], tmp_path)
    assert "Overfull \\hbox" not in log  # nothing sticks out of the page: the table is shrunk to \textwidth
    assert "Undefined control sequence" not in log and "Unicode character" not in log


# ----------------------------------------------------------------------------------------------- loss curves


def test_loss_curves_show_every_task_of_every_row_over_epochs(store):
    records = load_records(store, SUITE)
    fig = trajectory_figure(trajectories(records), SUITE, "loss", styles=records.styles)
    panels = {ax.get_title().split(" (")[0]: ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert set(panels) == {"separate", "naive_mtl", "fused", "fuse_then_joint", "naive_aa"}
    for name, ax in panels.items():
        assert {line.get_gid() for line in ax.lines} >= set(TASKS), name  # every task, not only the last fine-tune
        assert ax.get_xlabel() == "epoch"
        assert all(len(line.get_xdata()) > 2 for line in ax.lines if line.get_gid() in TASKS), name
    # fuse_then_joint: its fine-tunes over epochs 0..2, then its joint phase over 2..4
    ftj = panels["fuse_then_joint"]
    ends = sorted({round(float(line.get_xdata()[-1]), 6) for line in ftj.lines if line.get_gid() in TASKS})
    assert ends == [2.0, 4.0]
    assert all(float(x) == int(x) for x in ftj.get_xticks())  # whole epochs, not fractional steps


# ----------------------------------------------------------------------------------------------- search


def test_the_search_summary_gives_the_margin_with_an_interval(store):
    from bench.search.config import load_config
    from bench.search.driver import open_study
    from bench.search.objective import TrialRunner
    from bench.search.outputs import margin, margin_text
    from bench.search.storage import open_storage

    args = ["suite=synthetic", "strategy=fuse_then_joint", "space=fusion_weights", "trials=3", "plots=false",
            "train.epochs=2", "train.max_train_samples=400", "train.log_every=2", "threads=1",
            f"results_dir={store}"]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["search", *args]) == 0
    printed = out.getvalue()
    assert "best − baseline (mean, validation): " in printed
    cfg = load_config(args)
    study = open_study(cfg, open_storage(cfg.storage, cfg.heartbeat))
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    base = next(t for t in trials if t.user_attrs.get("baseline"))
    other = next(t for t in trials if t.number != base.number)
    m = margin(cfg, TrialRunner(cfg), other, base, len(trials))
    assert m["value"] == pytest.approx(other.values[0] - base.values[0], abs=1e-9)
    assert m["lo"] < m["value"] < m["hi"] and 0 <= m["p"] <= 1 and m["examples"]["clean"] > 100
    text = margin_text(m)
    assert "95% interval over" in text and "one seed" in text and "training noise is not included" in text
    summary = json.loads((cfg.out_dir / "summary.json").read_text())
    assert summary["margin"]["objective"] == "mean"
