"""`bench check`: the regression gate against a baseline written from the fixture records (schema 1) and from
schema-2 records with per-example predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.check import check_command
from bench.errors import BenchError

FIXTURES = Path(__file__).parent / "fixtures" / "records"
FTJ = "fuse_then_joint[weighting=gradnorm]"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES, tmp_path / "results")
    return tmp_path / "results"


def opts(results: Path, **more) -> dict:
    return {"suite": "synthetic", "results_dir": str(results), **more}


@pytest.fixture
def baselined(results: Path, capsys) -> Path:
    assert check_command(opts(results, update=True)) == 0
    capsys.readouterr()
    return results


def edit(results: Path, cell: str, change) -> None:
    path = next((results / "synthetic" / "cells").glob(f"*/{cell}/record.json"))
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_update_writes_baseline(baselined):
    baseline = json.loads((baselined / "baselines" / "synthetic.json").read_text())
    assert baseline["schema_version"] == 1  # the baseline file's own format, whatever the records' schema
    assert baseline["suite"] == "synthetic" and baseline["code_version"] == "0.1.0+gfixture"
    assert baseline["variants"]["naive_mtl"]["metrics"]["t0"]["accuracy"] == pytest.approx(0.84)  # newest records
    assert baseline["variants"][FTJ]["train_samples_per_s"] == pytest.approx(1550.0)
    assert baseline["directions"]["r0"]["mse"] == "min"


def test_passes_on_the_original_records(baselined, capsys):
    assert check_command(opts(baselined)) == 0
    assert "OK:" in capsys.readouterr().out


def test_fails_on_a_degraded_record_naming_the_metric(baselined, capsys):
    def degrade(record):
        record["rows"]["naive_mtl"]["metrics"]["test"]["r0"]["mse"] = 0.75  # mean .50 -> .60: +20% (min metric)

    edit(baselined, "nmtl1", degrade)
    assert check_command(opts(baselined)) == 0  # within the noise of its two seeds (0.45, 0.55): 3 SEs = 42 %
    assert check_command(opts(baselined, z=0)) == 1  # the tolerance alone
    out = capsys.readouterr().out
    assert "1 regression(s)" in out
    assert "naive_mtl" in out and "mse" in out and "+20.00 %" in out
    assert "0.5000" in out and "0.6000" in out


def test_accuracy_drop_beyond_tolerance_fails_within_passes(baselined, capsys):
    def drop(points):
        def change(record):
            record["rows"]["separate"]["metrics"]["test"]["t0"]["accuracy"] -= points / 100
        return change

    edit(baselined, "sep0", drop(1.0))  # the mean drops 0.5 points: within 1.0
    assert check_command(opts(baselined, z=0)) == 0  # z=0: the tolerance alone decides
    edit(baselined, "sep0", drop(3.0))  # now 2.0 points in total
    assert check_command(opts(baselined, z=0)) == 1
    out = capsys.readouterr().out
    assert "accuracy" in out and "-2.00 pts" in out
    assert check_command(opts(baselined, z=0, tolerance=2.5)) == 0


def test_improvement_is_not_a_regression(baselined):
    edit(baselined, "ftj0", lambda r: r["rows"]["fuse_then_joint"]["metrics"]["test"]["t0"].update(accuracy=0.99))
    assert check_command(opts(baselined)) == 0


def test_throughput_regression_uses_relative_tolerance(baselined, capsys):
    edit(baselined, "ftj0", lambda r: r["rows"]["fuse_then_joint"]["telemetry"].update(train_samples_per_s=100.0))
    edit(baselined, "ftj1", lambda r: r["rows"]["fuse_then_joint"]["telemetry"].update(train_samples_per_s=100.0))
    assert check_command(opts(baselined)) == 0  # throughput is not gated by default
    assert "throughput (not gated" in capsys.readouterr().out
    assert check_command(opts(baselined, throughput="absolute")) == 1  # 1550 -> 100 samples/s
    assert "train_samples_per_s" in capsys.readouterr().out
    assert check_command(opts(baselined, throughput="relative")) == 1  # and slower than the run's other rows
    assert check_command(opts(baselined, throughput="absolute", throughput_tolerance=0.95)) == 0


def test_corrupted_record_is_skipped_and_seed_count_noted(baselined, capsys):
    from bench.report.records import RecordWarning

    path = baselined / "synthetic" / "cells" / "separate" / "sep1" / "record.json"
    path.write_text("{")
    with pytest.warns(RecordWarning, match="sep1"):
        check_command(opts(baselined))
    assert "separate (n=1, baseline n=2)" in capsys.readouterr().out


def test_missing_variant_is_not_run_with_its_command(baselined, capsys):
    shutil.rmtree(baselined / "synthetic" / "cells" / "naive_mtl")
    assert check_command(opts(baselined)) == 0  # not a regression: listed, with the command that runs it
    out = capsys.readouterr().out
    assert "not run (1 of" in out and "regression" not in out
    assert f"python -m bench run suite=synthetic strategy=naive_mtl seeds=2 results_dir={baselined}" in out
    assert check_command(opts(baselined, require_all=True)) == 1


def test_baseline_from_another_suite(baselined, tmp_path):
    other = tmp_path / "other.json"
    baseline = json.loads((baselined / "baselines" / "synthetic.json").read_text())
    other.write_text(json.dumps({**baseline, "suite": "glue"}))
    with pytest.raises(BenchError, match=r"is for suite 'glue', not 'synthetic'"):
        check_command(opts(baselined, baseline=str(other)))


def test_bad_input(results, tmp_path):
    with pytest.raises(BenchError, match=r"no baseline at .*--update"):
        check_command(opts(results))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(BenchError, match="not valid JSON"):
        check_command(opts(results, baseline=str(garbage)))
    with pytest.raises(BenchError, match="tolerance='abc' is not a number"):
        check_command(opts(results, tolerance="abc"))
    with pytest.raises(BenchError, match=r"`python -m bench run suite=nothing`"):
        check_command({"suite": "nothing", "results_dir": str(tmp_path), "update": True})


def test_schema_2_records_baseline_pass_and_regress(tmp_path, capsys):
    from tests.test_report_stats import labels, with_correct, write_record

    results = tmp_path / "v2"
    target = {"a": labels(100)}
    for seed in (0, 1):
        for label, right in (("separate", 70), ("naive_mtl", 75)):
            write_record(results, label=label, seed=seed, preds={"a": with_correct(target["a"], right, seed)},
                         targets=target)
    toy = {"suite": "toy", "results_dir": str(results)}
    assert check_command({**toy, "update": True}) == 0
    baseline = json.loads((results / "baselines" / "toy.json").read_text())
    assert baseline["variants"]["naive_mtl"]["n"] == 2
    assert baseline["variants"]["naive_mtl"]["metrics"]["a"]["accuracy"] == pytest.approx(0.75)
    assert check_command(toy) == 0
    capsys.readouterr()
    # a newer re-run of one cell at 60% replaces the older record of that (label, configuration, seed)
    write_record(results, label="naive_mtl", seed=1, preds={"a": with_correct(target["a"], 60)}, targets=target,
                 created="2026-12-02T00:00:00Z")
    assert check_command(toy) == 1
    assert "naive_mtl" in capsys.readouterr().out


def test_schema_2_records_of_another_budget_are_another_variant(tmp_path, capsys):
    from tests.test_report_stats import labels, with_correct, write_record

    results = tmp_path / "v2"
    target = {"a": labels(100)}
    write_record(results, label="naive_mtl", seed=0, preds={"a": with_correct(target["a"], 75)}, targets=target)
    toy = {"suite": "toy", "results_dir": str(results)}
    assert check_command({**toy, "update": True}) == 0
    capsys.readouterr()
    write_record(results, label="naive_mtl", seed=0, preds={"a": with_correct(target["a"], 90)}, targets=target,
                 train={"epochs": 3})
    # the baseline's plain naive_mtl is now two rows: it is compared with the one of its own configuration, and
    # the other is new
    assert check_command(toy) == 0
    out = capsys.readouterr().out
    assert "naive_mtl as naive_mtl[train.epochs=2]" in out and "baseline (--update adds them): naive_mtl[train" in out
