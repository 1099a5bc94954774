"""The cross-suite report (`bench report suite=a,b,c`, docs/across_suites.md) on real stores: three suites trained
for one epoch (synthetic, synthetic_conflict and a renamed copy of synthetic whose `clean` task is scored by MSE,
lower is better), every number checked against scipy computed here by hand from the records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats as st

from bench.cli import main
from bench.errors import BenchError
from bench.report.across import build_across, probability_of_improvement, resolve_suites
from bench.report.records import load_records, metrics_frame, task_specs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
COPY = "synthetic_copy"
QUICK = ["train.epochs=1", "train.max_train_samples=300", "report=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """results/ with synthetic, synthetic_conflict and synthetic_copy (separate, naive_mtl, uncertainty; seeds 0, 1),
    plus gradnorm on synthetic only (a method missing from two suites)."""
    root = tmp_path_factory.mktemp("across")
    raw = yaml.safe_load((REPO / "suites" / "synthetic.yaml").read_text())
    raw["name"] = COPY
    raw["data"]["options"]["seed"] = 7
    for task in raw["tasks"]:
        if task["name"] == "clean":
            task["primary"] = "mse"  # lower is better: normalised as B/N
    copy = root / "synthetic_copy.yaml"
    copy.write_text(yaml.safe_dump(raw))
    results = root / "results"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", f"suite=synthetic,synthetic_conflict,{copy}", "strategy=separate,naive_mtl,uncertainty",
                     "seeds=2", *QUICK, f"results_dir={results}"]) == 0
        assert main(["run", "suite=synthetic", "strategy=gradnorm", "seeds=2", *QUICK, f"results_dir={results}"]) == 0
    finally:
        torch.set_num_threads(threads)
    suites = ["synthetic", "synthetic_conflict", str(copy)]
    return {"results": results, "suites": suites, "copy": copy,
            "report": build_across(results, suites, bootstrap=300)}


def by_hand(results: Path, suite: str) -> pd.DataFrame:
    """Normalised scores straight from the records: primary test metric over the separate seed mean (or the
    inverse for a lower-is-better metric)."""
    records = load_records(results, suite)
    specs = task_specs(records)
    frame = metrics_frame(records)
    frame = frame[(frame["split"] == "test")
                  & (frame["metric"] == frame["task"].map(lambda t: specs[t]["primary"]))].copy()
    frame["method"] = frame["variant"].str.replace(r"\[suite=[^\]]*\]$", "", regex=True)
    base = frame[frame["method"] == "separate"].groupby("task")["value"].mean()
    lower = frame["task"].map(lambda t: specs[t]["metrics"][specs[t]["primary"]] == "min")
    ref = frame["task"].map(base)
    frame["score"] = np.where(lower, ref / frame["value"], frame["value"] / ref)
    frame["suite"] = suite
    return frame


def test_scores_are_normalised_to_separate_and_iqm_is_trim_mean(store):
    report = store["report"]
    assert report.suites == ["synthetic", "synthetic_conflict", COPY]
    assert report.methods == ["separate", "naive_mtl", "uncertainty"]
    assert len(report.strata) == 15
    hand = pd.concat([by_hand(store["results"], s) for s in ("synthetic", "synthetic_conflict", COPY)])
    hand = hand[hand["method"].isin(report.methods)]
    assert (hand[(hand["suite"] == COPY) & (hand["task"] == "clean")]["metric"] == "mse").all()
    merged = report.scores.merge(hand, on=["suite", "task", "method", "seed"], suffixes=("", "_hand"))
    assert len(merged) == len(report.scores) == len(hand) == 15 * 3 * 2
    np.testing.assert_allclose(merged["score"], merged["score_hand"], rtol=1e-12)
    mse = report.scores[(report.scores["suite"] == COPY) & (report.scores["task"] == "clean")]
    assert (mse["direction"] == "min").all()
    for method, row in report.summary.set_index("method").iterrows():
        scores = hand[hand["method"] == method]["score"].to_numpy()
        assert row["iqm"] == pytest.approx(st.trim_mean(scores, 0.25), rel=1e-12)
        assert row["mean"] == pytest.approx(scores.mean(), rel=1e-12)
        assert row["above"] == pytest.approx((scores > 1).mean())
        assert row["runs"] == 30
        for key in ("iqm", "mean", "above"):
            assert row[f"{key}_lo"] <= row[key] <= row[f"{key}_hi"]
    separate = report.scores[report.scores["method"] == "separate"].groupby(["suite", "task"])["score"].mean()
    higher = separate.drop(index=(COPY, "clean"))
    np.testing.assert_allclose(higher, 1.0)  # N/B: separate's seed mean is exactly 1 on every task
    assert separate[(COPY, "clean")] >= 1.0  # B/N: the mean of the inverse is >= 1 (Jensen)


def test_average_ranks_friedman_and_nemenyi_by_hand(store):
    report = store["report"]
    blocks = report.scores.groupby(["suite", "task", "method"])["score"].mean().unstack("method")[report.methods]
    ranks = np.array([st.rankdata(-row) for row in blocks.to_numpy()])  # rank 1 = the best score of a task
    expected = pd.Series(ranks.mean(axis=0), index=report.methods)
    pd.testing.assert_series_equal(report.ranks.average.loc[report.methods], expected, check_names=False)
    assert report.summary.set_index("method")["rank"].to_dict() == pytest.approx(expected.to_dict())
    chi2, p = st.friedmanchisquare(*blocks.to_numpy().T)
    assert report.ranks.friedman == pytest.approx(chi2) and report.ranks.friedman_p == pytest.approx(p)
    nemenyi = report.ranks.nemenyi
    assert list(nemenyi.index) == list(nemenyi.columns) == report.methods
    np.testing.assert_allclose(nemenyi.to_numpy(), nemenyi.to_numpy().T)
    assert (np.diag(nemenyi.to_numpy()) == 1).all()
    k, n = len(report.methods), len(blocks)
    assert report.ranks.cd == pytest.approx(st.studentized_range.ppf(0.95, k, np.inf) / math.sqrt(2)
                                            * math.sqrt(k * (k + 1) / (6 * n)))


def test_probability_of_improvement(store):
    report = store["report"]
    runs = {m: [g["score"].to_numpy() for _, g in report.scores[report.scores["method"] == m]
                .groupby(["suite", "task"], sort=False)] for m in report.methods}
    for method in report.methods:
        assert probability_of_improvement(runs[method], runs[method]) == 0.5
    table = report.improvement.set_index(["x", "y"])
    assert len(table) == 6  # every ordered pair of 3 methods
    for x in report.methods:
        for y in report.methods:
            if x == y:
                continue
            p = probability_of_improvement(runs[x], runs[y])
            assert p + probability_of_improvement(runs[y], runs[x]) == pytest.approx(1.0)
            assert table.loc[(x, y), "p"] + table.loc[(y, x), "p"] == pytest.approx(1.0)
            # rliable's definition: per task the Mann–Whitney U of x against y over m·n, averaged over tasks
            u = [st.mannwhitneyu(a, b).statistic / (len(a) * len(b)) for a, b in zip(runs[x], runs[y])]
            assert table.loc[(x, y), "p"] == pytest.approx(np.mean(u)) == pytest.approx(p)
            assert table.loc[(x, y), "lo"] <= table.loc[(x, y), "p"] <= table.loc[(x, y), "hi"]


def test_profiles_and_reproducible_intervals(store):
    report = store["report"]
    again = build_across(store["results"], store["suites"], bootstrap=300)
    pd.testing.assert_frame_equal(report.summary, again.summary)
    pd.testing.assert_frame_equal(report.improvement, again.improvement)
    for method in report.methods:
        prof = report.profiles[report.profiles["method"] == method]
        scores = report.scores[report.scores["method"] == method]["score"].to_numpy()
        expected = (scores[None, :] > prof["tau"].to_numpy()[:, None]).mean(axis=1)
        np.testing.assert_allclose(prof["fraction"], expected)
        assert (prof["lo"] <= prof["fraction"] + 1e-12).all() and (prof["fraction"] <= prof["hi"] + 1e-12).all()
        assert (np.diff(prof["fraction"]) <= 0).all()


def test_command_writes_tables_and_figures(store, capsys):
    results, copy = store["results"], store["copy"]
    assert main(["report", f"suite=synthetic,synthetic_conflict,{copy}", f"results_dir={results}",
                 "bootstrap=200", "compare=naive_mtl,separate"]) == 0
    out_dir = results / "across" / f"synthetic+synthetic_conflict+{COPY}"
    printed = capsys.readouterr().out
    assert str(out_dir) in printed and "IQM" in printed and "P(naive_mtl > separate)" in printed
    for name in ("across.md", "across.json", "across_summary.csv", "across_improvement.csv", "across_nemenyi.csv",
                 "across_profiles.csv", "across_scores.csv", "across_per_suite.csv", "across_ranks.csv"):
        assert (out_dir / name).stat().st_size > 0, name
    for stem in ("across_iqm", "across_profiles", "across_improvement", "across_cd"):
        for ext in ("png", "pdf"):
            assert (out_dir / f"{stem}.{ext}").stat().st_size > 1000, (stem, ext)
    data = json.loads((out_dir / "across.json").read_text())
    assert data["split"] == "test" and data["suites"] == ["synthetic", "synthetic_conflict", COPY]
    assert data["dropped_methods"] == ["gradnorm"]
    assert {(r["x"], r["y"]) for r in data["probability_of_improvement"]} == {("naive_mtl", "separate"),
                                                                            ("separate", "naive_mtl")}
    md = (out_dir / "across.md").read_text()
    assert "gradnorm" in md and "| separate | 1.000" in md and "Friedman" in md
    assert main(["report", "suite=all", f"results_dir={results}", "bootstrap=100"]) == 0
    assert json.loads((results / "across" / "all" / "across.json").read_text())["suites"] == sorted(
        ["synthetic", "synthetic_conflict", COPY])


def test_methods_missing_from_a_suite_are_named(store):
    report = store["report"]
    assert report.dropped == ["gradnorm"]
    assert any("gradnorm" in note and "left out" in note for note in report.notes)
    kept = build_across(store["results"], store["suites"][:1] + store["suites"][2:], bootstrap=100,
                        strategies=["naive_mtl"])
    assert kept.methods == ["separate", "naive_mtl"] and math.isnan(kept.ranks.friedman)


@pytest.mark.parametrize("suite, message", [
    ("synthetic,nosuch", "unknown suite 'nosuch'"),
    ("synthetic,text", "no records for suite 'text'"),
    ("[synthetic]", "needs 2 or more suites"),
    ("synthetic,synthetic", "names suite 'synthetic' twice"),
    ("synthetic,/nowhere/x.yaml", "suite file '/nowhere/x.yaml' does not exist"),
])
def test_bad_suites_are_one_line_errors(store, capsys, suite, message):
    assert main(["report", f"suite={suite}", f"results_dir={store['results']}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_bad_options_are_errors(store, tmp_path):
    results, suites = store["results"], store["suites"]
    with pytest.raises(BenchError, match="strategy='gradnorm' is not a method of every selected suite"):
        build_across(results, suites, strategies=["gradnorm"])
    with pytest.raises(BenchError, match=r"1 method\(s\) in every suite \(separate\)"):
        build_across(results, suites, strategies=["separate"])
    with pytest.raises(BenchError, match="compare: 'nope' is not a method"):
        build_across(results, suites, compare=("nope", "separate"))
    with pytest.raises(BenchError, match="has no 'naive' row to normalise by"):
        build_across(results, suites, baseline="naive")
    with pytest.raises(BenchError, match="suite=all found 0 suite"):
        resolve_suites("all", tmp_path)
    for opts, text in (({"split": "validation"}, "test split only"), ({"interval": "pm"}, "interval= is not an"),
                       ({"level": 2}, "level=2"), ({"bootstrap": 5}, "bootstrap=5")):
        assert main(["report", "suite=synthetic,synthetic_conflict", f"results_dir={results}",
                     *(f"{k}={v}" for k, v in opts.items())]) == 2, text
