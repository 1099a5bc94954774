"""Leaderboard statistics on schema-2 records: intervals, paired tests, corrections, winner marks, Δm% inputs,
one configuration per row, compare=, and the cross-checks against bench.stats.

Records and predictions are written by :func:`write_record` into tmp_path from given per-example predictions, so
nothing here trains.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as scipy_t

from bench import stats
from bench.cli import main
from bench.errors import BenchError
from bench.metrics import compute
from bench.report import build_leaderboards, report_command, write_report
from bench.report.leaderboard import caption, report_options, to_latex, to_markdown
from bench.report.plots import error_bars

pytestmark = pytest.mark.integration

SUITE = "toy"
TRAIN = {"epochs": 2, "max_train_samples": 400, "batch_size": 16, "lr": 0.001}
CLASSIFICATION = {"target": "classification", "primary": "accuracy", "metrics": {"accuracy": "max", "macro_f1": "max"}}


# ----------------------------------------------------------------------------------------------- helpers


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def with_correct(target: np.ndarray, n_correct: int, seed: int = 0, classes: int = 2) -> np.ndarray:
    """Predictions of ``target`` that are right on exactly ``n_correct`` examples (chosen at random)."""
    rng = np.random.default_rng(seed)
    pred = (target + 1) % classes
    right = rng.choice(len(target), size=n_correct, replace=False)
    pred[right] = target[right]
    return pred.astype(np.int64)


def labels(n: int, seed: int = 0, classes: int = 2) -> np.ndarray:
    return np.random.default_rng(1000 + seed).integers(0, classes, size=n).astype(np.int64)


def write_record(results: Path, *, label: str, seed: int, preds: dict[str, np.ndarray],
                 targets: dict[str, np.ndarray], strategy: str | None = None, row: str | None = None,
                 train: dict | None = None, params: dict | None = None, tasks: dict | None = None,
                 ids: dict[str, np.ndarray] | None = None, data_fp: str = "data0000", budget_match: str = "none",
                 created: str = "2026-12-01T00:00:00Z", code_versions: list[str] | None = None,
                 samples_seen: int = 800, extra_split: dict | None = None, suite: str = SUITE,
                 kind: str | None = None) -> dict:
    """Write one schema-2 record of ``suite`` (test split) plus its predictions.npz; returns the record.

    ``preds[task]`` are the row's test predictions; metrics are computed from them with bench.metrics, so the
    point estimates agree with the predictions. ``extra_split = {"split": "test_mismatched", "preds": {...},
    "targets": {...}}`` adds another evaluated split."""
    strategy = strategy or label.split("[", 1)[0]
    row = row or strategy
    train = {**TRAIN, **(train or {})}
    params = params or {}
    tasks = tasks or {t: CLASSIFICATION for t in preds}
    config = {"suite": {"name": suite, "train": train, "backbone": {"name": "mlp"}, "split": {"seed": 0},
                        "tasks": list(tasks), **({"kind": kind} if kind else {})},
              "strategy": strategy, "params": params, "budget_match": budget_match}
    fingerprint = _hash(config)
    key = _hash([label, seed, fingerprint, data_fp])
    rel = f"stages/evaluate/{key}/predictions.npz"
    arrays, metrics, kept = {}, {}, {}
    splits = [("test", preds, targets)]
    if extra_split:
        splits.append((extra_split["split"], extra_split["preds"], extra_split["targets"]))
    for split, split_preds, split_targets in splits:
        for task, pred in split_preds.items():
            target = split_targets[task]
            example_ids = (ids or {}).get(task, np.arange(len(target), dtype=np.int64))
            arrays[f"{split}/{task}/pred"] = np.asarray(pred)
            arrays[f"{split}/{task}/target"] = np.asarray(target)
            arrays[f"{split}/{task}/id"] = np.asarray(example_ids)
            metrics.setdefault(split, {})[task] = compute(list(tasks[task]["metrics"]), target, np.asarray(pred))
            kept.setdefault(split, {})[task] = rel
    path = results / suite / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    versions = code_versions or ["0.2.0+gtest"]
    record = {
        "schema_version": 2, "suite": suite, "strategy": strategy, "label": label, "params": params, "seed": seed,
        "cell": key, "config": config, "config_fingerprint": fingerprint,
        "budget_fingerprint": _hash({"train": train, "budget_match": budget_match}), "budget_match": budget_match,
        "data_fingerprint": data_fp, "code_version": versions[-1], "backbone": "mlp", "tasks": tasks,
        "rows": {row: {
            "metrics": metrics, "best_epoch": {},
            "telemetry": {"wall_time_s": 10.0, "train_samples_per_s": 1000.0, "peak_memory_mb": 300.0,
                          "memory_kind": "host_rss", "trainable_params": 20000},
            "trajectories": {},
            "budget": {"train_samples_seen": samples_seen, "optimizer_steps": samples_seen // 16,
                       "epochs": float(train["epochs"])},
            "predictions": kept,
            "stages": [{"stage": "evaluate", "key": key, "reused": False, "code_version": v, "impl_version": 1,
                        "versions": {}} for v in versions],
            "code_versions": sorted(set(versions)),
        }},
        "budget": train, "versions": {"python": "3.11"}, "created": created, "status": "complete",
    }
    folder = results / suite / "cells" / strategy / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record))
    return record


def board(results: Path, **options):
    boards, _ = build_leaderboards(results, SUITE, options=report_options(**options))
    return boards[0]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


def md_lines(md: str) -> dict[str, str]:
    return {line.split(" | ")[0].strip("| `"): line for line in md.splitlines() if line.startswith("| `")}


# ----------------------------------------------------------------------------------------------- A/A control


def seeds_of(results: Path, label: str, target: dict, correct: dict[str, list[int]], shift: int = 0, **kw) -> None:
    """One record per seed of ``label``: task t is right on ``correct[t][s]`` examples at seed s."""
    for s in range(len(next(iter(correct.values())))):
        preds = {t: with_correct(target[t], correct[t][s], 97 * s + shift) for t in correct}
        write_record(results, label=label, seed=s, preds=preds, targets=target, **kw)


def test_aa_control_identical_rows_with_one_seed_get_p_1_and_no_mark(results):
    target = {"a": labels(150), "b": labels(150, 1)}
    preds = {"a": with_correct(target["a"], 110), "b": with_correct(target["b"], 95, 1)}
    for label in ("separate", "naive_mtl"):
        write_record(results, label=label, seed=0, preds=preds, targets=target)
    lb = board(results)
    t = lb.table
    assert t.loc["naive_mtl", "a/accuracy"] == t.loc["separate", "a/accuracy"]
    for key in ("a/accuracy", "b/accuracy", "avg", "delta_m"):
        assert t.loc["naive_mtl", key + ":p"] == 1.0, key
        assert math.isnan(t.loc["naive_mtl", key + ":p_adj"]), key  # one seed: not a markable test
        assert t.loc["naive_mtl", key + ":mark"] == t.loc["separate", key + ":mark"] == "", key
        assert not t.loc["naive_mtl", key + ":markable"]
    assert t.loc["naive_mtl", "a/accuracy:test"] == "McNemar (one seed)"  # the test-set-only question
    assert t.loc["naive_mtl", "avg:test"] == "z (one seed)"
    md = to_markdown(lb)
    assert "\\*" not in md and "≈" not in md.split("## Validation")[0] and "**" not in md.split("| Samples seen")[0]
    assert "No *, bold or ≈: rows have 1 seed, and marks need ≥ 3 seeds per row and baseline (`seeds=3`)" in caption(lb)
    assert "test-set variance only" in caption(lb) and "seed variance is unknown" in caption(lb)
    row = md_lines(md)["naive_mtl"]
    assert "73.3 [" in row
    compare = write_report(results, SUITE, results / "out", compare="naive_mtl,separate")["compare"]
    text = compare.read_text()
    assert compare.name == "compare_naive_mtl_vs_separate.md"
    assert "| a accuracy | 73.3 | 73.3 | +0.0 | [+0.0, +0.0] | McNemar (one seed) | 1.000 | 1.000 |" in text
    assert "Not a claim about training methods" in text


def test_aa_control_with_three_identical_seeds_is_a_paired_t_with_p_1_and_a_tie(results):
    target = {"a": labels(120)}
    for label in ("separate", "naive_mtl"):
        seeds_of(results, label, target, {"a": [80, 85, 90]})
    t = board(results).table
    assert t.loc["naive_mtl", "a/accuracy:test"] == "paired t"
    assert t.loc["naive_mtl", "a/accuracy:p"] == 1.0 and t.loc["naive_mtl", "a/accuracy:mark"] == "tie"
    assert t.loc["naive_mtl", "n"] == 3 and t.loc["naive_mtl", "a/accuracy:markable"]


def test_aa_control_with_disjoint_seeds_is_a_welch_t_and_unmarked_when_equal(results):
    target = {"a": labels(120)}
    seeds_of(results, "separate", target, {"a": [80, 85, 90]})
    seeds_of(results, "naive_mtl", target, {"a": [84, 81, 88]}, shift=1)
    for s, n_right in zip((3, 4, 5), (83, 86, 80)):
        write_record(results, label="aa_copy", strategy="naive_mtl", seed=s,
                     preds={"a": with_correct(target["a"], n_right, s)}, targets=target)
    lb = board(results)
    est = lb.inference.difference("aa_copy", "naive_mtl", "a/accuracy")
    assert not est.paired and est.k == 3 and est.df >= 2 and est.p > 0.05
    assert lb.table.loc["aa_copy", "a/accuracy:test"] == "Welch t"  # against separate, whose seeds are 0..2
    assert lb.table.loc["naive_mtl", "a/accuracy:test"] == "paired t"


# ----------------------------------------------------------------------------------------------- winners


def test_clearly_better_row_gets_a_star_and_is_the_bold_winner(results):
    target = {"a": labels(200)}
    seeds_of(results, "separate", target, {"a": [118, 120, 122]})
    seeds_of(results, "naive_mtl", target, {"a": [189, 190, 191]}, shift=1)
    seeds_of(results, "gradnorm", target, {"a": [121, 127, 118]}, shift=2)
    lb = board(results)
    t = lb.table
    assert t.loc["naive_mtl", "a/accuracy"] == pytest.approx(95.0)
    assert t.loc["naive_mtl", "a/accuracy:p_adj"] < 1e-3
    assert t.loc["naive_mtl", "a/accuracy:mark"] == "best"
    assert t.loc["gradnorm", "a/accuracy:mark"] == "" and t.loc["gradnorm", "a/accuracy:p_adj"] > 0.05
    rows = md_lines(to_markdown(lb))
    assert re.search(r"\| \*\*95\.0\\\* \[\d+\.\d, \d+\.\d\]\*\* \|", rows["naive_mtl"])
    assert "61.0 [" in rows["gradnorm"] and "\\*" not in rows["gradnorm"].split(" | ")[2]
    tex = to_latex(lb)
    assert re.search(r"\\bfseries 95\.0\$\^\{\*\}\$\{\\scriptsize\\,\[", tex)
    assert "Bold: best of its column and significantly better than every other markable row" in caption(lb)


def test_one_point_better_on_150_examples_is_no_winner(results):
    target = {"a": labels(150)}
    seeds_of(results, "separate", target, {"a": [104, 105, 106]})
    seeds_of(results, "naive_mtl", target, {"a": [106, 107, 108]}, shift=1)
    lb = board(results)
    t = lb.table
    assert t.loc["naive_mtl", "a/accuracy"] > t.loc["separate", "a/accuracy"]
    assert t.loc["naive_mtl", "a/accuracy:mark"] == t.loc["separate", "a/accuracy:mark"] == "tie"
    assert t.loc["separate", "a/accuracy:p_best"] > 0.05
    md = to_markdown(lb)
    assert "**71.3" not in md and "71.3 [" in md_lines(md)["naive_mtl"] and " ≈" in md_lines(md)["naive_mtl"]
    assert r"\underline{71.3" in to_latex(lb)


def test_two_seeds_print_intervals_and_p_but_no_mark_and_say_how_many_seeds_are_needed(results):
    target = {"a": labels(200)}
    seeds_of(results, "separate", target, {"a": [100, 102]})
    seeds_of(results, "naive_mtl", target, {"a": [190, 191]}, shift=1)
    lb = board(results)
    t = lb.table
    assert t.loc["naive_mtl", "a/accuracy:p"] < 0.05 and math.isnan(t.loc["naive_mtl", "a/accuracy:p_adj"])
    assert (t["a/accuracy:mark"] == "").all() and lb.marking.n_tests == 0
    assert "marks need ≥ 3 seeds" in caption(lb) and "\\*" not in to_markdown(lb)
    assert not math.isnan(t.loc["naive_mtl", "a/accuracy:lo"])


def test_row_without_predictions_is_never_the_bold_winner(results, tmp_path):
    target = {"a": labels(200)}
    seeds_of(results, "separate", target, {"a": [99, 100, 101]})
    seeds_of(results, "naive_mtl", target, {"a": [179, 180, 181]}, shift=1)
    seeds_of(results, "gradnorm", target, {"a": [198, 199, 199]}, shift=2)
    for path in (results / SUITE / "cells" / "gradnorm").glob("*/record.json"):
        old = json.loads(path.read_text())
        old["schema_version"] = 1
        for key in ("config", "config_fingerprint", "budget_fingerprint"):
            old.pop(key)
        del old["rows"]["gradnorm"]["predictions"]
        path.write_text(json.dumps(old))
    lb = board(results)
    t = lb.table
    assert t.loc["gradnorm", "a/accuracy"] > t.loc["naive_mtl", "a/accuracy"]
    assert (t["a/accuracy:mark"] != "best").all()  # the untestable row is better: nobody is bold
    assert math.isnan(t.loc["gradnorm", "a/accuracy:lo"])
    assert ("rows gradnorm: no per-example predictions (records older than schema 2): no intervals" in lb.notes)
    assert "rows without predictions: ± std over seeds" in caption(lb)


# ----------------------------------------------------------------------------------------------- one config per row


def test_one_label_at_two_budgets_is_two_rows_and_a_foreign_budget_baseline_leaves_delta_m_empty(results, capsys):
    target = {"a": labels(100), "b": labels(100, 1)}
    for seed in (0, 1):
        write_record(results, label="separate", seed=seed, targets=target,
                     preds={"a": with_correct(target["a"], 70, seed), "b": with_correct(target["b"], 60, seed)})
        write_record(results, label="naive_mtl", seed=seed, targets=target,
                     preds={"a": with_correct(target["a"], 75, seed), "b": with_correct(target["b"], 62, seed)})
    write_record(results, label="naive_mtl", seed=0, targets=target, train={"epochs": 3}, samples_seen=1200,
                 preds={"a": with_correct(target["a"], 90, 5), "b": with_correct(target["b"], 80, 5)})
    lb = board(results)
    t = lb.table
    assert list(t.index) == ["separate", "naive_mtl[train.epochs=2]", "naive_mtl[train.epochs=3]"]
    assert "naive_mtl" not in t.index  # never one mixed row
    assert t.loc["naive_mtl[train.epochs=2]", "n"] == 2 and t.loc["naive_mtl[train.epochs=3]", "n"] == 1
    assert t.loc["naive_mtl[train.epochs=3]", "a/accuracy"] == pytest.approx(90.0)
    assert t.loc["naive_mtl[train.epochs=3]", "train_samples_seen"] == 1200
    assert t.loc["naive_mtl[train.epochs=2]", "baseline"] == "separate"
    assert not math.isnan(t.loc["naive_mtl[train.epochs=2]", "delta_m"])
    assert math.isnan(t.loc["naive_mtl[train.epochs=3]", "delta_m"])
    assert math.isnan(t.loc["naive_mtl[train.epochs=3]", "avg:p"])  # no baseline, no test
    note = ("Δm% empty for naive_mtl[train.epochs=3]: no separate row with the same budget (train.epochs=3) and "
            "data; run `bench run suite=toy strategy=separate train.epochs=3`")
    assert note in lb.notes
    paths = write_report(results, SUITE, results / "out")
    assert note in paths["md"].read_text()
    assert note in json.loads(paths["json"].read_text())["notes"]
    assert "| `naive_mtl[train.epochs=3]` | 1 |" in paths["md"].read_text()
    report_command({"suite": SUITE, "results_dir": str(results), "out": str(results / "out2")})
    printed = " ".join(capsys.readouterr().out.split())
    assert "Δm% empty for naive_mtl[train.epochs=3]" in printed


def test_a_separate_row_at_the_same_budget_is_the_baseline(results):
    target = {"a": labels(100)}
    for epochs in (2, 3):
        write_record(results, label="separate", seed=0, targets=target, train={"epochs": epochs},
                     preds={"a": with_correct(target["a"], 60 + 10 * epochs, epochs)})
        write_record(results, label="naive_mtl", seed=0, targets=target, train={"epochs": epochs},
                     preds={"a": with_correct(target["a"], 65 + 10 * epochs, 7 + epochs)})
    t = board(results).table
    assert t.loc["naive_mtl[train.epochs=3]", "baseline"] == "separate[train.epochs=3]"
    assert t.loc["naive_mtl[train.epochs=2]", "baseline"] == "separate[train.epochs=2]"
    # 95 vs 90 and 85 vs 80: each against its own budget's separate
    assert t.loc["naive_mtl[train.epochs=3]", "delta_m"] == pytest.approx(100 * 5 / 90)
    assert t.loc["naive_mtl[train.epochs=2]", "delta_m"] == pytest.approx(100 * 5 / 80)


def test_two_labels_of_one_configuration_stay_two_rows_and_reruns_keep_the_newest(results):
    target = {"a": labels(50)}
    write_record(results, label="separate", seed=0, preds={"a": with_correct(target["a"], 30)}, targets=target)
    write_record(results, label="naive_mtl", seed=0, preds={"a": with_correct(target["a"], 10)}, targets=target,
                 created="2026-11-01T00:00:00Z")
    path = next((results / SUITE / "cells" / "naive_mtl").glob("*/record.json"))
    path.rename(path.parent.parent / "older.json")  # keep it out of the way while writing the newer one
    write_record(results, label="naive_mtl", seed=0, preds={"a": with_correct(target["a"], 40)}, targets=target)
    old_dir = path.parent.parent / "old"
    old_dir.mkdir()
    (path.parent.parent / "older.json").rename(old_dir / "record.json")
    write_record(results, label="aa_copy", strategy="naive_mtl", seed=0, preds={"a": with_correct(target["a"], 40)},
                 targets=target)
    t = board(results).table
    assert set(t.index) == {"separate", "naive_mtl", "aa_copy"}
    assert t.loc["naive_mtl", "a/accuracy"] == pytest.approx(80.0)  # the newer re-run, not the older one


# ----------------------------------------------------------------------------------------------- Δm% inputs


def _imbalanced(results: Path) -> None:
    """Accuracy up, macro F1 down: separate .75 acc / .733 F1; naive_mtl .775 acc / .631 F1 (one task)."""
    target = np.array([0] * 140 + [1] * 60, dtype=np.int64)
    sep = target.copy()
    sep[:40] = 1  # 100 of 140 zeros right
    sep[140:150] = 0  # 50 of 60 ones right
    mtl = np.zeros(200, dtype=np.int64)
    mtl[140:155] = 1  # all zeros right, 15 of 60 ones
    write_record(results, label="separate", seed=0, preds={"a": sep}, targets={"a": target})
    write_record(results, label="naive_mtl", seed=0, preds={"a": mtl}, targets={"a": target})


def test_delta_m_primary_vs_all_flips_the_sign_and_the_caption_names_the_metrics(results):
    _imbalanced(results)
    primary, every = board(results), board(results, delta_m="all")
    f1_sep, f1_mtl = (compute(["macro_f1"], np.array([0] * 140 + [1] * 60), p)["macro_f1"] for p in (
        np.r_[np.ones(40), np.zeros(100), np.zeros(10), np.ones(50)].astype(int),
        np.r_[np.zeros(140), np.ones(15), np.zeros(45)].astype(int)))
    assert primary.table.loc["naive_mtl", "delta_m"] == pytest.approx(100 * (0.775 - 0.75) / 0.75)
    assert every.table.loc["naive_mtl", "delta_m"] == pytest.approx(
        100 * ((0.775 - 0.75) / 0.75 + (f1_mtl - f1_sep) / f1_sep) / 2)
    assert primary.table.loc["naive_mtl", "delta_m"] > 0 > every.table.loc["naive_mtl", "delta_m"]
    assert "Δm% (Maninis et al., 2019) vs the separate row of the same budget and data, over: a accuracy." \
        in caption(primary)
    assert "over: a accuracy, a macro_f1." in caption(every)
    header_primary, header_all = to_markdown(primary).splitlines()[0], to_markdown(every).splitlines()[0]
    assert "a macro_f1 ↑ (%)" not in header_primary and "a macro_f1 ↑ (%)" in header_all
    assert r"over: a accuracy, a macro\_f1." in to_latex(every)
    # the hidden metric's test enters the family only when it enters Δm%
    assert math.isnan(primary.table.loc["naive_mtl"].get("a/macro_f1:p", math.nan))
    assert not math.isnan(every.table.loc["naive_mtl", "a/macro_f1:p"])


def test_delta_m_per_seed_mean_and_std_against_the_same_seed(results):
    target = {"a": labels(100)}
    for seed, (s, m) in enumerate([(50, 60), (80, 80)]):
        write_record(results, label="separate", seed=seed, preds={"a": with_correct(target["a"], s, seed)},
                     targets=target)
        write_record(results, label="naive_mtl", seed=seed, preds={"a": with_correct(target["a"], m, 9 + seed)},
                     targets=target)
    t = board(results).table
    per_seed = [100 * (60 - 50) / 50, 0.0]
    assert t.loc["naive_mtl", "delta_m_seed_mean"] == pytest.approx(np.mean(per_seed))
    assert t.loc["naive_mtl", "delta_m_seed_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert t.loc["naive_mtl", "delta_m"] == pytest.approx(100 * (70 - 65) / 65)  # on the seed means


# ----------------------------------------------------------------------------------------------- tests and intervals


def _three_rows_three_seeds(results: Path, n: int = 150, rows: int = 3, tasks: int = 3) -> dict:
    targets = {f"t{i}": labels(n, i, classes=3) for i in range(tasks)}
    names = ["separate", "naive_mtl", "fused", "fuse_then_joint", "uncertainty", "gradnorm", "other"][:rows]
    preds = {}
    for r, name in enumerate(names):
        for seed in range(3):
            p = {t: with_correct(targets[t], int(n * (0.6 + 0.05 * r + 0.02 * seed)), 100 * r + 10 * seed + i,
                                 classes=3) for i, t in enumerate(targets)}
            preds[(name, seed)] = p
            write_record(results, label=name, seed=seed, preds=p, targets=targets)
    return {"targets": targets, "preds": preds, "names": names}


def test_holm_adjusted_p_values_in_the_csv_equal_bench_stats_holm(results):
    _three_rows_three_seeds(results)
    paths = write_report(results, SUITE, results / "out")
    csv = pd.read_csv(paths["csv"])
    test = csv[csv["split"] == "test"].set_index("variant")
    raw = [(v, c) for c in test.columns if c.endswith(":p") for v in test.index if not math.isnan(test.loc[v, c])]
    assert len(raw) == 2 * (3 + 2)  # two rows against separate: three tasks, Avg, Δm%
    adjusted = stats.holm([test.loc[v, c] for v, c in raw])
    assert [test.loc[v, c + "_adj"] for v, c in raw] == pytest.approx(list(adjusted))
    bh = write_report(results, SUITE, results / "bh", correction="bh")
    csv_bh = pd.read_csv(bh["csv"]).query("split == 'test'").set_index("variant")
    assert [csv_bh.loc[v, c + "_adj"] for v, c in raw] == pytest.approx(list(stats.bh([test.loc[v, c]
                                                                                         for v, c in raw])))
    assert "after Holm–Bonferroni correction over the table's 10 tests" in paths["md"].read_text()
    assert "after Benjamini–Hochberg correction over the table's 10 tests" in bh["md"].read_text()


def test_report_interval_equals_the_two_level_formula_computed_by_hand(results):
    """mean ± t_ν √(s²/k + c_e): s² over the per-seed accuracies, c_e the mean covariance between two different seeds'
    per-example correctness divided by n (the jackknife of a mean), ν Welch–Satterthwaite; the tasks of this
    multi-input suite have their own examples, so Avg's c_e is the sum of theirs over T²."""
    data = _three_rows_three_seeds(results, n=90, tasks=2)
    lb = board(results, level=0.9)
    k, n = 3, 90

    def by_hand(xs: np.ndarray, ce: float) -> tuple[float, float]:
        s2 = np.var(xs, ddof=1)
        var = s2 / k + max(ce, 0.0)  # a covariance estimate can be negative; the test-set term cannot
        df = var**2 / ((s2 / k) ** 2 / (k - 1))
        half = scipy_t.ppf(0.95, df) * np.sqrt(var)
        return xs.mean() - half, xs.mean() + half

    per_seed, ce = {}, {}
    for task, target in data["targets"].items():
        z = np.stack([100.0 * (data["preds"][("naive_mtl", s)][task] == target) for s in range(3)])
        cov = np.cov(z)  # ddof=1 over examples
        ce[task] = (cov.sum() - np.trace(cov)) / (k * (k - 1)) / n
        per_seed[task] = z.mean(axis=1)
        lo, hi = by_hand(per_seed[task], ce[task])
        assert lb.table.loc["naive_mtl", f"{task}/accuracy:lo"] == pytest.approx(lo, abs=1e-9)
        assert lb.table.loc["naive_mtl", f"{task}/accuracy:hi"] == pytest.approx(hi, abs=1e-9)
        assert lb.table.loc["naive_mtl", f"{task}/accuracy:seed_sd"] == pytest.approx(np.std(per_seed[task], ddof=1))
        kk = int(sum((data["preds"][("naive_mtl", s)][task] == target).sum() for s in range(3)))
        w_lo, w_hi = stats.wilson(kk, 3 * 90, 0.9)
        assert lb.table.loc["naive_mtl", f"{task}/accuracy:wilson_lo"] == pytest.approx(100 * w_lo)
        assert lb.table.loc["naive_mtl", f"{task}/accuracy:wilson_hi"] == pytest.approx(100 * w_hi)
    lo, hi = by_hand((per_seed["t0"] + per_seed["t1"]) / 2, (ce["t0"] + ce["t1"]) / 4)
    assert (lb.table.loc["naive_mtl", "avg:lo"], lb.table.loc["naive_mtl", "avg:hi"]) == pytest.approx((lo, hi))
    # the point estimate stays the mean over seeds of the recorded metric
    assert lb.table.loc["naive_mtl", "t0/accuracy"] == pytest.approx(
        np.mean([100 * (data["preds"][("naive_mtl", s)]["t0"] == data["targets"]["t0"]).mean() for s in range(3)]))


def test_mde_in_the_caption_and_interval_display_options(results):
    _three_rows_three_seeds(results)
    lb = board(results)
    m = lb.marking
    assert m.mde > 0 and m.mde_seeds == 3 and set(m.mde_more) == {5, 10, 20}
    assert m.mde_more[5] < m.mde and m.mde_more[20] < m.mde_more[10] < m.mde_more[5]  # more seeds detect less
    more = ", ".join(f"{k} seeds: {v:.1f}" for k, v in m.mde_more.items())
    assert f"MDE (Avg, α=0.05, power 0.8): {m.mde:.1f} points at n=3 ({more})." in caption(lb)
    pm = board(results, interval="pm")
    lo, hi = pm.table.loc["separate", "t0/accuracy:lo"], pm.table.loc["separate", "t0/accuracy:hi"]
    value = pm.table.loc["separate", "t0/accuracy"]
    assert f"{value:.1f} ± {(hi - lo) / 2:.1f}" in md_lines(to_markdown(pm))["separate"]
    assert f"{value:.1f} [{lo:.1f}, {hi:.1f}]" in md_lines(to_markdown(lb))["separate"]
    assert "95% two-level t intervals [lo, hi]: mean ± t_ν·√(s²/n + c_e)" in caption(lb)
    assert "as ± half their width" in caption(pm)


# ----------------------------------------------------------------------------------------------- notes and columns


def test_provenance_budget_columns_and_extra_split(results):
    target = {"mnli": labels(80, 0, classes=3)}
    mm = {"mnli": labels(60, 1, classes=3)}
    for label, right, versions in (("separate", 50, ["0.2.0+gaaa"]), ("naive_mtl", 55, ["0.2.0+gaaa", "0.2.0+gbbb"])):
        write_record(results, label=label, seed=0, preds={"mnli": with_correct(target["mnli"], right, classes=3)},
                     targets=target, code_versions=versions, samples_seen=4000,
                     extra_split={"split": "test_mismatched", "targets": mm,
                                  "preds": {"mnli": with_correct(mm["mnli"], right - 10, 3, classes=3)}})
    paths = write_report(results, SUITE, results / "out")
    lb = board(results)
    assert "rows naive_mtl: assembled from stages of code versions 0.2.0+gaaa, 0.2.0+gbbb" in lb.notes
    assert list(lb.tasks) == ["mnli", "mnli_mismatched"]
    assert lb.table.loc["naive_mtl", "mnli_mismatched/accuracy"] == pytest.approx(100 * 45 / 60)
    assert lb.delta_metrics == (("mnli", "accuracy"),)  # the extra split is shown and tested, not in Δm%
    assert not math.isnan(lb.table.loc["naive_mtl", "mnli_mismatched/accuracy:p"])
    md = paths["md"].read_text()
    assert "mnli_mismatched accuracy ↑ (%)" in md and "Samples seen" in md and "| 4,000 |" in md
    csv = pd.read_csv(paths["csv"])
    for column in ("train_samples_seen", "optimizer_steps", "epochs", "delta_m_seed_mean", "delta_m_seed_std",
                   "avg:lo", "avg:hi", "avg:p", "avg:p_adj", "delta_m:lo", "mnli/accuracy:wilson_lo"):
        assert column in csv.columns, column
    assert csv.loc[csv["variant"] == "naive_mtl", "optimizer_steps"].item() == 250


def test_bar_error_bars_are_the_interval(results):
    _three_rows_three_seeds(results, n=60, tasks=1)
    lb = board(results)
    bars, kinds = error_bars(lb, "t0/accuracy")
    assert kinds == ["interval"] * 3
    t = lb.table
    assert bars[0, 1] == pytest.approx(t.loc["naive_mtl", "t0/accuracy"] - t.loc["naive_mtl", "t0/accuracy:lo"])
    assert bars[1, 1] == pytest.approx(t.loc["naive_mtl", "t0/accuracy:hi"] - t.loc["naive_mtl", "t0/accuracy"])


def test_predictions_on_other_examples_get_no_interval_and_a_note(results):
    target = {"a": labels(40)}
    write_record(results, label="separate", seed=0, preds={"a": with_correct(target["a"], 20)}, targets=target)
    write_record(results, label="naive_mtl", seed=0, preds={"a": with_correct(target["a"], 30)}, targets=target,
                 ids={"a": np.arange(100, 140)})
    lb = board(results)
    assert math.isnan(lb.table.loc["naive_mtl", "a/accuracy:lo"])
    assert "rows naive_mtl: evaluated on other a examples than separate: no intervals" in lb.notes


def test_a_missing_predictions_file_is_named_in_a_note(results):
    target = {"a": labels(40)}
    write_record(results, label="separate", seed=0, preds={"a": with_correct(target["a"], 20)}, targets=target)
    record = write_record(results, label="naive_mtl", seed=0, preds={"a": with_correct(target["a"], 30)},
                          targets=target)
    path = results / SUITE / record["rows"]["naive_mtl"]["predictions"]["test"]["a"]
    path.unlink()
    lb = board(results)
    assert f"rows naive_mtl: predictions file {path} is missing: no intervals" in lb.notes
    assert lb.table.loc["naive_mtl", "a/accuracy"] == pytest.approx(75.0)  # the recorded point estimate stays
    assert math.isnan(lb.table.loc["naive_mtl", "a/accuracy:p"])


def test_examples_are_paired_by_id_not_by_position(results):
    target = {"a": labels(60)}
    pred = with_correct(target["a"], 40)
    order = np.random.default_rng(0).permutation(60)
    write_record(results, label="separate", seed=0, preds={"a": pred}, targets=target)
    write_record(results, label="naive_mtl", seed=0, preds={"a": pred[order]}, targets={"a": target["a"][order]},
                 ids={"a": np.arange(60)[order]})
    t = board(results).table
    assert t.loc["naive_mtl", "a/accuracy:p"] == 1.0  # the same predictions, shuffled: still identical when paired
    assert t.loc["naive_mtl", "a/accuracy:lo"] == t.loc["separate", "a/accuracy:lo"]


# ----------------------------------------------------------------------------------------------- bad input


def test_compare_unknown_row_and_bad_level_are_one_line_errors(results, capsys):
    _imbalanced(results)
    with pytest.raises(BenchError) as err:
        write_report(results, SUITE, results / "out", compare="naive_mt,separate")
    assert str(err.value) == ("compare: unknown row 'naive_mt' (did you mean 'naive_mtl'?); rows: separate, "
                              "naive_mtl")
    with pytest.raises(BenchError, match=r"^confidence level 1\.5 must lie strictly between 0 and 1"):
        write_report(results, SUITE, results / "out", level=1.5)
    for bad, message in (("interval=brace", "unknown interval display 'brace'"),
                         ("correction=bonferroni", "unknown p-value correction 'bonferroni'"),
                         ("delta_m=some", "unknown delta_m mode 'some'"),
                         ("bootstrap=10", "bootstrap=10: intervals and tests no longer resample"),
                         ("min_seeds=1", "min_seeds=1 must be a whole number >= 2"),
                         ("budget_tolerance=2", "budget_tolerance=2 must be a fraction in [0, 1)"),
                         ("components=yes", "components='yes' must be true or false"),
                         ("level=1.5", "confidence level 1.5"),
                         ("compare=naive_mt,separate", "unknown row 'naive_mt'"),
                         ("compare=separate", "needs exactly two rows")):
        code = main(["report", f"suite={SUITE}", f"results_dir={results}", bad])
        err_text = capsys.readouterr().err
        assert code == 2 and message in err_text and err_text.count("\n") == 1, (bad, err_text)
    assert not (results / "out").exists()  # bad options fail before anything is written


def test_compare_from_the_cli_writes_the_paired_comparison(results, capsys):
    _imbalanced(results)
    code = main(["report", f"suite={SUITE}", f"results_dir={results}", f"out={results / 'out'}",
                 "compare=naive_mtl,separate", "delta_m=all"])
    assert code == 0
    text = (results / "out" / "compare_naive_mtl_vs_separate.md").read_text()
    assert "| a accuracy | 77.5 | 75.0 | +2.5 |" in text and "| a macro_f1 |" in text and "| Δm% |" in text
    assert "naive_mtl vs separate" in capsys.readouterr().out


def test_single_input_tasks_share_their_examples_in_the_test_set_term(tmp_path):
    """Two tasks answered right on the same examples: on a single-input suite their test-set errors are one error,
    so Avg's test-set SE equals a task's; scored as a multi-input suite (independent examples) it would be 1/√2 of
    it. Seeds and point estimates are the same either way."""
    target = labels(200)
    se = {}
    for kind in ("single_input", "multi_input"):
        results = tmp_path / kind
        for label in ("separate", "naive_mtl"):
            for seed, right in enumerate((120, 130, 125)):
                pred = with_correct(target, right, seed + (label == "naive_mtl"))
                write_record(results, label=label, seed=seed, preds={"a": pred, "b": pred.copy()},
                             targets={"a": target, "b": target}, kind=kind)
        lb = board(results)
        assert lb.inference.joint == (kind == "single_input")
        se[kind] = (lb.table.loc["naive_mtl", "avg:test_se"], lb.table.loc["naive_mtl", "a/accuracy:test_se"])
        assert lb.table.loc["naive_mtl", "avg"] == pytest.approx(lb.table.loc["naive_mtl", "a/accuracy"])
    assert se["single_input"][0] == pytest.approx(se["single_input"][1])
    assert se["multi_input"][0] == pytest.approx(se["multi_input"][1] / math.sqrt(2))
    assert "the tasks share their inputs" in caption(board(tmp_path / "single_input"))


def test_a_row_with_twice_the_samples_gets_no_mark_and_names_the_matched_control(results):
    target = {"a": labels(200)}
    seeds_of(results, "separate", target, {"a": [100, 102, 104]})
    seeds_of(results, "fuse_then_joint", target, {"a": [190, 191, 192]}, shift=1, samples_seen=1600)
    seeds_of(results, "naive_mtl", target, {"a": [150, 151, 152]}, shift=2)
    lb = board(results)
    t = lb.table
    assert not t.loc["fuse_then_joint", "delta_m:markable"] and t.loc["naive_mtl", "delta_m:markable"]
    assert t.loc["fuse_then_joint", "delta_m:p"] < 0.05 and math.isnan(t.loc["fuse_then_joint", "delta_m:p_adj"])
    assert (t.loc["fuse_then_joint", [k + ":mark" for k in lb.score_keys()]] == "").all()
    # naive_mtl beats separate, but the unmarked fuse_then_joint scores higher: "best of its column" cannot be claimed
    assert t.loc["naive_mtl", "a/accuracy:mark"] == "" and t.loc["separate", "a/accuracy:p_best"] < 0.05
    note = ("fuse_then_joint spent 2.00× the training samples of its baseline separate (1,600 vs 800; tolerance "
            "±5%): no *, bold or ≈ for it; run the matched control: `bench run suite=toy "
            "strategy=separate,fuse_then_joint budget.match=samples seeds=3`")
    assert note in lb.notes
    assert "\\*" not in md_lines(to_markdown(lb))["fuse_then_joint"]
    # the matched control in the store: the note shows its Δm% instead of the command
    seeds_of(results, "separate", target, {"a": [100, 102, 104]}, budget_match="samples")
    seeds_of(results, "fuse_then_joint", target, {"a": [101, 104, 103]}, shift=1, budget_match="samples")
    lb = board(results)
    matched, unmatched = "fuse_then_joint[budget.match=samples]", "fuse_then_joint[budget.match=none]"
    assert lb.table.loc[matched, "delta_m:markable"] and not lb.table.loc[unmatched, "delta_m:markable"]
    budget_note = next(n for n in lb.notes if n.startswith(f"{unmatched} spent"))
    value, lo, hi = (lb.table.loc[matched, k] for k in ("delta_m", "delta_m:lo", "delta_m:hi"))
    assert f"its matched control {matched}: Δm% {value:+.2f} [{lo:+.2f}, {hi:+.2f}]" in budget_note
