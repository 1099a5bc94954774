"""Ratio-of-sums metrics (entity F1, micro/macro F1, token accuracy) from per-example stats: the point value against
hand counts and seqeval/scikit-learn, the jackknife and bootstrap against brute-force recomputation, and a report on
a hand-written store whose tasks store stats and recipes (intervals, no Wilson/McNemar, per-label columns only in
the CSV/JSON, never in Δm% or Avg)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import f1_score

from bench import stats, twolevel
from bench.errors import BenchError
from bench.metrics import compute
from bench.record import Record
from bench.report import build_leaderboards, write_report
from bench.report.leaderboard import report_options, to_latex, to_markdown
from bench.report.leaderboard.render_terminal import to_rich
from bench.report.plots.bars import bars_figure
from bench.stats.ratios import Ratios, recipes_of

# ----------------------------------------------------------------------------------------------- recipes

TAG_STATS = ["tp", "n_pred", "n_true", "tok_correct", "tok_total"]
TAG_RECIPES = {
    "entity_f1": {"ratios": [{"num": {"tp": 2}, "den": {"n_pred": 1, "n_true": 1}}]},
    "entity_precision": {"ratios": [{"num": {"tp": 1}, "den": {"n_pred": 1}}]},
    "entity_recall": {"ratios": [{"num": {"tp": 1}, "den": {"n_true": 1}}]},
    "token_accuracy": {"ratios": [{"num": {"tok_correct": 1}, "den": {"tok_total": 1}}]},
}
LABELS = ["a", "b", "c"]
ML_STATS = [f"{k}_{lab}" for lab in LABELS for k in ("tp", "fp", "fn")]


def f1_ratio(label: str) -> dict:
    return {"num": {f"tp_{label}": 2}, "den": {f"tp_{label}": 2, f"fp_{label}": 1, f"fn_{label}": 1}}


ML_RECIPES = {
    "micro_f1": {"ratios": [{"num": {f"tp_{lab}": 2 for lab in LABELS},
                             "den": {f"{k}_{lab}": (2 if k == "tp" else 1) for lab in LABELS
                                     for k in ("tp", "fp", "fn")}}]},
    "macro_f1": {"ratios": [f1_ratio(lab) for lab in LABELS]},
    **{f"f1@{lab}": {"ratios": [f1_ratio(lab)]} for lab in LABELS},
}


def parsed(recipes: dict, columns: list[str]) -> dict[str, Ratios]:
    return recipes_of({"stats": columns, "recipes": recipes})


def multilabel_stats(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-example tp, fp, fn of every label, in the order of ML_STATS."""
    cols = []
    for j in range(len(LABELS)):
        t, p = y_true[:, j] == 1, y_pred[:, j] == 1
        cols += [t & p, ~t & p, t & ~p]
    return np.stack(cols, axis=1).astype(float)


# ----------------------------------------------------------------------------------------------- point values


def test_entity_f1_precision_recall_and_token_accuracy_equal_hand_counts_and_seqeval():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"],
            ["O", "B-LOC", "O", "O"],
            ["B-PER", "O", "B-MISC", "I-MISC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "O"],  # PER, LOC right; extra LOC; ORG missed
            ["O", "B-ORG", "O", "O"],  # the LOC is typed ORG: one false positive, one false negative
            ["B-PER", "O", "B-MISC", "O", "O"]]  # PER right; MISC cut short (wrong span)
    # counted by hand per sentence: tp, n_pred, n_true, correct tokens, tokens
    hand = np.array([[2, 3, 3, 4, 6], [0, 1, 1, 3, 4], [1, 2, 2, 4, 5]], dtype=float)
    r = parsed(TAG_RECIPES, TAG_STATS)
    # sums: tp 3, predicted 6, true 6, tokens 11 of 15
    assert r["entity_f1"].value(hand) == pytest.approx(2 * 3 / 12)
    assert r["entity_f1"].value(hand) == pytest.approx(seqeval_f1(gold, pred))
    assert r["entity_precision"].value(hand) == pytest.approx(3 / 6)
    assert r["entity_recall"].value(hand) == pytest.approx(3 / 6)
    correct = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    assert correct == 11 and r["token_accuracy"].value(hand) == pytest.approx(11 / 15)


def test_micro_macro_and_per_label_f1_equal_hand_counts_and_scikit_learn():
    y_true = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 1]])
    y_pred = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    s = multilabel_stats(y_true, y_pred)
    r = parsed(ML_RECIPES, ML_STATS)
    # by hand: a tp 3 fp 1 fn 0 -> 6/7; b tp 1 fp 1 fn 1 -> 2/4; c tp 1 fp 0 fn 1 -> 2/3; micro 2·5/(10+2+2)
    assert r["f1@a"].value(s) == pytest.approx(6 / 7)
    assert r["f1@b"].value(s) == pytest.approx(1 / 2)
    assert r["f1@c"].value(s) == pytest.approx(2 / 3)
    assert r["micro_f1"].value(s) == pytest.approx(10 / 14)
    assert r["macro_f1"].value(s) == pytest.approx((6 / 7 + 1 / 2 + 2 / 3) / 3)
    assert r["micro_f1"].value(s) == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert r["macro_f1"].value(s) == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_a_ratio_without_positive_denominator_is_left_out_and_none_scores_zero():
    r = parsed(ML_RECIPES, ML_STATS)["macro_f1"]
    only_a = multilabel_stats(np.array([[1, 0, 0]]), np.array([[1, 0, 0]]))  # b and c: no true, no predicted
    assert r.value(only_a) == 1.0  # the mean over the one label with a positive denominator
    assert r.value(np.zeros((3, len(ML_STATS)))) == 0.0


@pytest.mark.parametrize("recipe, message", [
    ({"ratios": []}, "must be a non-empty list of ratios"),
    ({"ratios": [{"num": {"tp": 1}}]}, "exactly the keys 'num' and 'den'"),
    ({"ratios": [{"num": {"tpp": 1}, "den": {"n_pred": 1}}]}, "names stats column 'tpp'; the task's stats are"),
    ({"ratios": [{"num": {"tp": "2"}, "den": {"n_pred": 1}}]}, "coefficient of 'tp' must be a finite number"),
])
def test_a_bad_recipe_is_one_line_naming_what_is_wrong(recipe, message):
    with pytest.raises(BenchError, match=message) as err:
        Ratios.parse("entity_f1", recipe, TAG_STATS)
    assert "\n" not in str(err.value) and "entity_f1" in str(err.value)


# ----------------------------------------------------------------------------------------------- resampling


def random_tag_stats(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_true = rng.integers(0, 4, n)
    n_pred = rng.integers(0, 4, n)
    tp = np.minimum(n_true, n_pred) - rng.integers(0, 2, n).clip(0, np.minimum(n_true, n_pred))
    tokens = rng.integers(3, 12, n)
    return np.stack([tp, n_pred, n_true, rng.integers(0, tokens + 1), tokens], axis=1).astype(float)


@pytest.mark.parametrize("metric", ["entity_f1", "token_accuracy"])
def test_jackknife_pseudo_values_equal_brute_force_leave_one_out(metric):
    s = random_tag_stats(40, 1)
    s[3] = [0, 0, 0, 2, 5]  # a sentence without entities: leaving it out changes no entity count
    r = parsed(TAG_RECIPES, TAG_STATS)[metric]
    theta, psi = twolevel.pseudo_values(r, None, s)
    n = len(s)
    brute = np.array([n * theta - (n - 1) * r.value(np.delete(s, i, axis=0)) for i in range(n)])
    assert theta == pytest.approx(r.value(s))
    np.testing.assert_allclose(psi, brute, rtol=0, atol=1e-10)


def test_macro_f1_jackknife_drops_a_label_whose_only_example_is_left_out():
    y_true = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]])
    y_pred = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 0]])  # b: only example 3 has it
    s = multilabel_stats(y_true, y_pred)
    r = parsed(ML_RECIPES, ML_STATS)["macro_f1"]
    loo = r.leave_one_out(s)
    for i in range(len(s)):
        assert loo[i] == pytest.approx(r.value(np.delete(s, i, axis=0)))
    assert loo[3] == pytest.approx(r.value(s[[0, 1, 2, 4]]))


def test_bootstrap_replicates_equal_brute_force_recomputation_on_the_resampled_examples():
    s = random_tag_stats(25, 2)
    r = parsed(TAG_RECIPES, TAG_STATS)["entity_f1"]
    idx = np.random.default_rng(3).integers(0, len(s), size=(300, len(s)))
    brute = np.array([r.value(s[row]) for row in idx])
    np.testing.assert_allclose(stats.metric_matrix(r, None, s, idx), brute, rtol=0, atol=1e-12)
    # two seeds, replicates resample seeds then examples: the mean over the drawn seeds of each seed's value
    s2 = random_tag_stats(25, 4)
    draws = stats.draw({"ner": len(s)}, n_seeds=2, B=200, seed=5)
    got = stats.replicate_scores(r, None, np.stack([s, s2]), draws, "ner")
    per_seed = np.array([[r.value(x[row]) for row in draws.examples["ner"]] for x in (s, s2)])
    want = per_seed[draws.seeds, np.arange(draws.B)[:, None]].mean(axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_scores_of_a_ratio_metric_take_per_seed_stats():
    s, s2 = random_tag_stats(30, 6), random_tag_stats(30, 7)
    r = parsed(TAG_RECIPES, TAG_STATS)["entity_f1"]
    scores = twolevel.Scores.of(r, None, np.stack([s, s2]), seeds=(0, 1), space="ner", factor=100.0)
    assert scores.x.tolist() == pytest.approx([100 * r.value(s), 100 * r.value(s2)])
    one = twolevel.Scores.of(r, None, s, seeds=(0,), space="ner")  # one seed: stats [n, k]
    assert one.x.tolist() == pytest.approx([r.value(s)])


# ----------------------------------------------------------------------------------------------- records


def test_record_task_spec_round_trips_stats_and_recipes_and_old_specs_stay_as_they_were(tmp_path):
    record = store_record(tmp_path / "results", "separate", 0, np.random.default_rng(0))
    spec = record["tasks"]["ner"]
    read = Record(**record)
    assert read.tasks["ner"].stats == TAG_STATS and read.tasks["ner"].recipes == TAG_RECIPES
    assert read.dump()["tasks"]["ner"] == spec
    old = {"target": "classification", "primary": "accuracy", "metrics": {"accuracy": "max"}}
    assert Record(**{**record, "tasks": {"ner": old}}).dump()["tasks"]["ner"] == old
    with pytest.raises(BenchError, match="recipes without the names of their stats columns"):
        Record(**{**record, "tasks": {"ner": {k: v for k, v in spec.items() if k != "stats"}}})


# ----------------------------------------------------------------------------------------------- a report

SUITE = "tagging_toy"
N = {"ner": 60, "attrs": 50}
TASKS = {
    "ner": {"target": "token_classification", "primary": "entity_f1",
            "metrics": {"entity_f1": "max", "token_accuracy": "max"}, "stats": TAG_STATS, "recipes": TAG_RECIPES},
    "attrs": {"target": "multi_label", "primary": "macro_f1",
              "metrics": {"macro_f1": "max", "micro_f1": "max", **{f"f1@{lab}": "max" for lab in LABELS}},
              "stats": ML_STATS, "recipes": ML_RECIPES},
}


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def task_arrays(task: str, rng: np.random.Generator, skill: float) -> dict[str, np.ndarray]:
    """id, target, pred and stats of one seed of one row (targets fixed across rows and seeds)."""
    n = N[task]
    fixed = np.random.default_rng(100 + len(task))
    if task == "ner":
        target = fixed.integers(0, 5, size=(n, 8))
        pred = np.where(rng.random((n, 8)) < skill, target, (target + 1) % 5)
        n_true = (target == 1).sum(axis=1)  # an "entity" per tag 1 (enough for a report test)
        n_pred = (pred == 1).sum(axis=1)
        tp = ((target == 1) & (pred == 1)).sum(axis=1)
        s = np.stack([tp, n_pred, n_true, (pred == target).sum(axis=1), np.full(n, 8)], axis=1)
    else:
        target = (fixed.random((n, len(LABELS))) < 0.4).astype(np.int64)
        pred = np.where(rng.random((n, len(LABELS))) < skill, target, 1 - target)
        s = multilabel_stats(target, pred)
    return {"id": np.arange(n, dtype=np.int64)[::-1].copy(), "target": target, "pred": pred,
            "stats": s.astype(float)}


def store_record(results: Path, strategy: str, seed: int, rng: np.random.Generator, skill: float = 0.8,
                 tasks: dict | None = None) -> dict:
    """One schema-3 record of SUITE with its predictions.npz (metrics computed from the stats by their recipes)."""
    tasks = tasks or TASKS
    train = {"epochs": 1, "batch_size": 8, "lr": 0.01}
    config = {"suite": {"name": SUITE, "train": train, "backbone": {"name": "mlp"}, "tasks": list(tasks)},
              "strategy": strategy, "params": {}, "budget_match": "none"}
    fingerprint = _hash(config)
    key = _hash([strategy, seed, fingerprint])
    rel = f"stages/evaluate/{key}/predictions.npz"
    arrays, metrics = {}, {}
    for task, spec in tasks.items():
        per = task_arrays(task, rng, skill)
        arrays |= {f"test/{task}/{k}": v for k, v in per.items()}
        recipes = recipes_of(spec)
        metrics[task] = {m: recipes[m].value(per["stats"]) for m in spec["metrics"]}
    path = results / SUITE / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    record = {
        "schema_version": 3, "suite": SUITE, "strategy": strategy, "label": strategy, "params": {}, "seed": seed,
        "cell": key, "config": config, "config_fingerprint": fingerprint,
        "budget_fingerprint": _hash(train), "data_fingerprint": "data0000", "code_version": "0.2.0+gtest",
        "backbone": "mlp", "tasks": tasks, "train": train, "created": "2026-12-01T00:00:00Z", "status": "complete",
        "rows": {strategy: {
            "metrics": {"test": metrics}, "best_epoch": {},
            "telemetry": {"wall_time_s": 10.0, "train_samples_per_s": 100.0, "peak_memory_mb": 300.0,
                          "memory_kind": "host_rss", "trainable_params": 2000},
            "budget": {"train_samples_seen": 400, "optimizer_steps": 50, "epochs": 1.0},
            "predictions": {"test": {t: rel for t in tasks}},
            "stages": [{"stage": "evaluate", "key": key, "reused": False, "code_version": "0.2.0+gtest",
                        "impl_version": 1, "versions": {}}],
            "code_versions": ["0.2.0+gtest"]}},
    }
    folder = results / SUITE / "cells" / strategy / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record))
    return record


@pytest.fixture
def store(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    for strategy, skill in (("separate", 0.8), ("naive_mtl", 0.85)):
        for seed in range(3):
            store_record(results, strategy, seed, np.random.default_rng([seed, int(skill * 100)]), skill)
    return results


@pytest.mark.integration
def test_report_of_ratio_metrics_has_intervals_from_the_stats(store):
    boards, _ = build_leaderboards(store, SUITE, options=report_options(delta_m="all"))
    lb = boards[0]
    t = lb.table
    for key in ("ner/entity_f1", "attrs/macro_f1", "ner/token_accuracy", "attrs/micro_f1", "avg", "delta_m"):
        assert t[key + ":lo"].notna().all() and t[key + ":hi"].notna().all(), key
        assert (t[key + ":lo"] < t[key] + 1e-9).all() and (t[key] < t[key + ":hi"] + 1e-9).all(), key
    # the interval is the two-level one of the per-seed recipe values on the stored stats (ids stored reversed)
    data = [np.load(next((store / SUITE / "stages").rglob("predictions.npz")))]
    assert data[0]["test/ner/id"][0] == N["ner"] - 1
    est = lb.inference.estimate("naive_mtl", "ner/entity_f1")
    assert est.value == pytest.approx(t.loc["naive_mtl", "ner/entity_f1"])
    lo, hi = est.interval(lb.options.level)
    assert (t.loc["naive_mtl", "ner/entity_f1:lo"], t.loc["naive_mtl", "ner/entity_f1:hi"]) == pytest.approx(
        (lo, min(hi, 100.0)))
    assert t.loc["naive_mtl", "ner/entity_f1:test"] == "paired t"
    # Δm% and Avg: primaries and, with delta_m=all, every metric but the per-label ones
    assert ("attrs", "micro_f1") in lb.delta_metrics and not any("@" in m for _, m in lb.delta_metrics)
    assert "f1@a" not in lb.shown_metrics("attrs")


@pytest.mark.integration
def test_per_label_columns_are_in_the_csv_and_json_but_not_in_markdown_latex_or_delta_m(store, tmp_path):
    paths = write_report(store, SUITE, tmp_path / "out", delta_m="all")
    csv = pd.read_csv(paths["csv"]).set_index("variant")
    assert {"attrs/f1@a", "attrs/f1@b", "attrs/f1@c"} <= set(csv.columns)
    assert csv.loc["separate", "attrs/f1@a"] == pytest.approx(100 * np.mean([
        Record.read(p).rows["separate"].metrics["test"]["attrs"]["f1@a"]
        for p in (store / SUITE / "cells" / "separate").rglob("record.json")]))
    board = json.loads(paths["json"].read_text())
    row = board["splits"]["test"][0]
    assert "attrs/f1@a" in row and not any("@" in m for m in board["boards"]["test"]["delta_m_metrics"])
    md, tex = paths["md"].read_text(), paths["tex"].read_text()
    assert "f1@" not in md and "f1@" not in tex
    assert "attrs micro_f1" in md  # delta_m=all shows the other metrics


@pytest.mark.integration
def test_a_ratio_accuracy_gets_no_wilson_interval_and_no_mcnemar_test(tmp_path):
    results = tmp_path / "results"
    spec = {"target": "token_classification", "primary": "accuracy", "metrics": {"accuracy": "max"},
            "stats": TAG_STATS, "recipes": {"accuracy": TAG_RECIPES["token_accuracy"]}}
    for strategy, skill in (("separate", 0.8), ("naive_mtl", 0.7)):
        store_record(results, strategy, 0, np.random.default_rng(int(skill * 10)), skill, tasks={"ner": spec})
    lb = build_leaderboards(results, SUITE, options=report_options())[0][0]
    t = lb.table
    assert t.loc["naive_mtl", "ner/accuracy:test"] == "z (one seed)"
    assert math.isnan(t.loc["naive_mtl", "ner/accuracy:wilson_lo"])
    assert not math.isnan(t.loc["naive_mtl", "ner/accuracy:lo"])
    assert "ner accuracy" in to_markdown(lb) and "ner accuracy" in to_latex(lb)


@pytest.mark.integration
def test_metric_headers_carry_their_direction_in_markdown_latex_and_the_terminal(tmp_path):
    results = tmp_path / "results"
    spec = {"target": "token_classification", "primary": "entity_f1",
            "metrics": {"entity_f1": "max", "token_error": "min"}, "stats": TAG_STATS,
            "recipes": {"entity_f1": TAG_RECIPES["entity_f1"],
                        "token_error": {"ratios": [{"num": {"tok_total": 1, "tok_correct": -1},
                                                    "den": {"tok_total": 1}}]}}}
    for strategy, skill in (("separate", 0.8), ("naive_mtl", 0.7)):
        store_record(results, strategy, 0, np.random.default_rng(int(skill * 10)), skill, tasks={"ner": spec})
    lb = build_leaderboards(results, SUITE, options=report_options(delta_m="all"))[0][0]
    header = to_markdown(lb).splitlines()[0]
    assert "| ner entity_f1 ↑ (%) | ner token_error ↓ | Avg ↑ (%) | Δm% ↑ |" in header
    tex = to_latex(lb)
    assert r"entity\_f1 $\uparrow$ (\%)" in tex and r"token\_error $\downarrow$" in tex
    assert r"Avg $\uparrow$ (\%)" in tex and r"$\Delta_m$ (\%) $\uparrow$" in tex
    assert [c.header for c in to_rich(lb).columns][2:4] == ["ner entity_f1 ↑ (%)", "ner token_error ↓"]
    # the token error is a ratio with a negative coefficient: its interval is not cut at 0 by the recipe
    assert lb.inference.recipes["ner"]["token_error"].bounds == (-math.inf, math.inf)


@pytest.mark.integration
def test_per_task_bars_use_each_tasks_primary_metric_with_its_direction(store, tmp_path):
    lb = build_leaderboards(store, SUITE, options=report_options())[0][0]
    labels = {ax.get_title(): ax.get_xlabel() for ax in bars_figure(lb).axes if ax.get_visible() and ax.get_title()}
    assert labels == {"ner": "entity_f1 ↑ (%)", "attrs": "macro_f1 ↑ (%)"}
    results = tmp_path / "min"
    spec = {"target": "token_classification", "primary": "token_error", "metrics": {"token_error": "min"},
            "stats": TAG_STATS, "recipes": {"token_error": {"ratios": [
                {"num": {"tok_total": 1, "tok_correct": -1}, "den": {"tok_total": 1}}]}}}
    for strategy, skill in (("separate", 0.8), ("naive_mtl", 0.7)):
        store_record(results, strategy, 0, np.random.default_rng(int(skill * 10)), skill, tasks={"ner": spec})
    lb = build_leaderboards(results, SUITE, options=report_options())[0][0]
    assert bars_figure(lb).axes[0].get_xlabel() == "token_error ↓, lower is better"


@pytest.mark.integration
def test_every_renderer_names_the_metrics_that_enter_delta_m(store, tmp_path):
    paths = write_report(store, SUITE, tmp_path / "out", delta_m="all")
    names = ["ner entity_f1", "ner token_accuracy", "attrs macro_f1", "attrs micro_f1"]
    md, tex = paths["md"].read_text(), paths["tex"].read_text()
    over = "Δm% (Maninis et al., 2019) vs the separate row of the same budget and data, over: " + ", ".join(names)
    assert over in md
    assert r"$\Delta_m$\% vs.\ separate over: " + ", ".join(n.replace("_", r"\_") for n in names) in tex
    board = json.loads(paths["json"].read_text())["boards"]["test"]
    assert over in board["caption"] and board["delta_m_metrics"] == [n.replace(" ", "/") for n in names]
    lb = build_leaderboards(store, SUITE, options=report_options(delta_m="all"))[0][0]
    assert over in str(to_rich(lb).caption)


def test_a_report_with_a_bad_recipe_stops_with_one_line_naming_task_and_metric(tmp_path):
    results = tmp_path / "results"
    bad = {**TASKS["ner"], "recipes": {"entity_f1": {"ratios": [{"num": {"tp": 2}, "den": {"n_gold": 1}}]}}}
    for strategy in ("separate", "naive_mtl"):
        store_record(results, strategy, 0, np.random.default_rng(0), tasks={"ner": TASKS["ner"]})
    path = next((results / SUITE / "cells" / "naive_mtl").rglob("record.json"))
    record = json.loads(path.read_text())
    record["tasks"]["ner"] = bad
    path.write_text(json.dumps(record))
    # the board takes a task's recipes from its first record: keep only the damaged one
    (results / SUITE / "cells" / "separate").rename(tmp_path / "elsewhere")
    with pytest.raises(BenchError, match="task 'ner' of the records: ratio 0 of metric 'entity_f1' names stats "
                                         "column 'n_gold'") as err:
        build_leaderboards(results, SUITE, options=report_options())
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------- mean AP


def test_mean_ap_jackknife_equals_brute_force_with_ties_missing_labels_and_last_positives():
    rng = np.random.default_rng(11)
    for _ in range(60):
        n, n_labels = int(rng.integers(2, 20)), int(rng.integers(1, 4))
        y = (rng.random((n, n_labels)) < rng.random()).astype(np.int8)
        y[rng.random((n, n_labels)) < 0.2] = -1  # missing labels
        scores = np.round(rng.random((n, n_labels)) * rng.integers(1, 5)) / 4  # many ties
        theta, psi = twolevel.pseudo_values("mean_ap", y, scores)
        brute = [compute(["mean_ap"], np.delete(y, i, axis=0), np.delete(scores, i, axis=0))["mean_ap"]
                 for i in range(n)]
        assert theta == pytest.approx(compute(["mean_ap"], y, scores)["mean_ap"], abs=1e-12)
        np.testing.assert_allclose(psi, n * theta - (n - 1) * np.array(brute), rtol=0, atol=1e-9)


def test_mean_ap_bootstrap_replicates_equal_brute_force_recomputation():
    rng = np.random.default_rng(12)
    for _ in range(20):
        n, n_labels = int(rng.integers(2, 20)), int(rng.integers(1, 4))
        y = (rng.random((n, n_labels)) < rng.random()).astype(np.int8)
        y[rng.random((n, n_labels)) < 0.2] = -1
        scores = np.round(rng.random((n, n_labels)) * rng.integers(1, 5)) / 4
        idx = rng.integers(0, n, size=(30, n))
        brute = [compute(["mean_ap"], y[row], scores[row])["mean_ap"] for row in idx]
        np.testing.assert_allclose(stats.metric_matrix("mean_ap", y, scores, idx), brute, rtol=0, atol=1e-12)


def test_a_recipe_states_its_range_and_a_bad_range_is_one_line():
    cols = ["tp", "n_pred", "n_true"]
    f1 = {"ratios": [{"num": {"tp": 2}, "den": {"n_pred": 1, "n_true": 1}}]}
    assert Ratios.parse("f1", f1, cols).bounds == (0.0, math.inf)  # counts over counts: only ≥ 0 is known
    assert Ratios.parse("f1", {**f1, "bounds": [0, 1]}, cols).bounds == (0.0, 1.0)  # an F1 cannot pass 1
    with pytest.raises(BenchError, match=r"recipe of metric 'f1': bounds must be \[low, high\]"):
        Ratios.parse("f1", {**f1, "bounds": [1, 0]}, cols)
