"""The offline suites of the new task kinds, end to end on small budgets: ``tagging`` (token tagging on real text) and
``multilabel`` (multi-label on real MNIST digits). Each row's score of a new kind comes with an interval computed from
the stored per-example statistics, per-label (per-type) results reach the CSV and JSON boards only, and the record
says how every metric is recomputed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from .conftest import records, run_cli

pytestmark = pytest.mark.slow


def _board(results, suite: str) -> tuple[str, pd.DataFrame, dict]:
    report = results / suite / "report"
    return ((report / "leaderboard.md").read_text(), pd.read_csv(report / "leaderboard.csv"),
            json.loads((report / "leaderboard.json").read_text()))


def test_tagging_suite_reports_entity_f1_with_intervals(results):
    out = run_cli("run", "suite=tagging", "strategy=separate,naive_mtl", "sample_scale=0.25", "train.epochs=1",
                  f"results_dir={results}", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    md, csv, _ = _board(results, "tagging")
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert "ner entity_f1 ↑ (%)" in header and "pos token_accuracy ↑ (%)" in header and "f1@" not in header
    row = next(line for line in md.splitlines() if line.startswith("| `naive_mtl`"))
    assert row.count("[") >= 4  # ner, pos, genre, Avg: every score with its interval
    test = csv[csv["split"] == "test"].set_index("variant")
    assert {"ner/f1@person", "ner/entity_f1:lo", "pos/token_accuracy:hi"} <= set(test.columns)
    rec = next(r for r in records(results) if r["strategy"] == "naive_mtl")
    spec = rec["tasks"]["ner"]
    assert spec["stats"][:5] == ["tp", "n_pred", "n_true", "tok_correct", "tok_total"]
    assert set(spec["recipes"]) >= {"entity_f1", "f1@person"} and rec["tasks"]["pos"]["metrics"] == {
        "token_accuracy": "max"}
    # the stored per-sentence counts give the record's entity F1 exactly
    pred_file = results / "tagging" / rec["rows"]["naive_mtl"]["predictions"]["test"]["ner"]
    with np.load(pred_file) as z:
        s = z["test/ner/stats"].sum(axis=0)
    assert rec["rows"]["naive_mtl"]["metrics"]["test"]["ner"]["entity_f1"] == pytest.approx(2 * s[0] / (s[1] + s[2]))


def test_multilabel_suite_reports_f1_at_a_validation_threshold_and_map(results):
    out = run_cli("run", "suite=multilabel", "strategy=separate,naive_mtl", "train.epochs=1",
                  "train.max_train_samples=400", "train.max_eval_samples=200", f"results_dir={results}", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    md, csv, js = _board(results, "multilabel")
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert "digits micro_f1 ↑ (%)" in header and "top_left accuracy ↑ (%)" in header
    row = next(line for line in md.splitlines() if line.startswith("| `naive_mtl`"))
    assert row.count("[") >= 3
    test = csv[csv["split"] == "test"]
    assert {f"digits/f1@digit_{d}" for d in range(10)} <= set(test.columns)
    rec = next(r for r in records(results) if r["strategy"] == "naive_mtl")
    assert list(rec["tasks"]["digits"]["metrics"])[:3] == ["micro_f1", "macro_f1", "mean_ap"]
    seen = rec["rows"]["naive_mtl"]["spent"]["train_samples_per_task"]
    assert seen["top_left"] < seen["digits"]  # an empty top-left cell has no label
    pred_file = results / "multilabel" / rec["rows"]["naive_mtl"]["predictions"]["test"]["digits"]
    with np.load(pred_file) as z:
        threshold = float(z["test/digits/threshold"][0])
        valid_threshold = float(z["validation/digits/threshold"][0])
        target, scores = z["test/digits/target"], z["test/digits/pred"]
    assert threshold == valid_threshold  # test is scored at the threshold chosen on validation
    from sklearn.metrics import f1_score

    micro = f1_score(target, (scores > threshold).astype(int), average="micro", zero_division=0)
    assert rec["rows"]["naive_mtl"]["metrics"]["test"]["digits"]["micro_f1"] == pytest.approx(micro)
