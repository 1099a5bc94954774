"""`bench check` tells noise from regression: a real two-row run and its baseline, then the same store as a busy
machine leaves it (every samples/s halved: passes), with a planted metric regression (fails), with a row not run
(listed with its command, not a regression), and the seed-noise rule on a multi-seed baseline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.check import HELP, OPTIONS, compare
from bench.cli import main
from bench.store import write_json
from tests.conftest import FAST, REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    results = root / "results"
    assert main(["run", *FAST, "strategy=separate,naive_mtl", f"results_dir={results}"]) == 0
    baseline = root / "baseline.json"
    assert main(["check", "suite=synthetic", f"results_dir={results}", f"baseline={baseline}", "--update"]) == 0
    return results, baseline


@pytest.fixture
def store(gated, tmp_path):
    """A copy of the gated store, to change."""
    results, baseline = gated
    shutil.copytree(results, tmp_path / "results")
    return tmp_path / "results", baseline


def rewrite(results: Path, change) -> None:
    """Change every record the way a later run would have written it (sealed again)."""
    for path in sorted(results.glob("synthetic/cells/*/*/record.json")):
        record = json.loads(path.read_text())
        record.pop("integrity", None)
        change(record)
        write_json(path, record)


def check(results: Path, baseline: Path, *more: str) -> int:
    return main(["check", "suite=synthetic", f"results_dir={results}", f"baseline={baseline}", *more])


def test_halved_throughput_passes(store, capsys):
    results, baseline = store

    def halve(record):
        for row in record["rows"].values():
            if row["telemetry"].get("train_samples_per_s"):
                row["telemetry"]["train_samples_per_s"] /= 2

    rewrite(results, halve)
    assert check(results, baseline) == 0
    out = capsys.readouterr().out
    assert "OK:" in out and "throughput not gated" in out and "median now/baseline 0.50x" in out
    assert check(results, baseline, "throughput=relative") == 0  # a uniform slowdown: every ratio to the median holds
    assert check(results, baseline, "throughput=absolute", "throughput_tolerance=0.4") == 1  # idle machines only
    assert "train_samples_per_s" in capsys.readouterr().out


def test_planted_metric_regression_fails(store, capsys):
    results, baseline = store

    def plant(record):
        if record["strategy"] == "naive_mtl":
            record["rows"]["naive_mtl"]["metrics"]["test"]["cls3"]["accuracy"] -= 0.05

    rewrite(results, plant)
    assert check(results, baseline) == 1
    out = capsys.readouterr().out
    assert "1 regression(s)" in out and "naive_mtl" in out and "cls3" in out and "-5.00 pts" in out


def test_missing_row_is_not_run_with_the_command_that_runs_it(store, capsys):
    results, baseline = store
    shutil.rmtree(results / "synthetic" / "cells" / "naive_mtl")
    assert check(results, baseline) == 0
    out = capsys.readouterr().out
    assert "not run (1 of 2 baseline rows" in out and "regression" not in out
    assert f"run them with: python -m bench run suite=synthetic strategy=naive_mtl results_dir={results}" in out
    assert check(results, baseline, "require_all=true") == 1


def test_nothing_run_is_not_78_regressions(tmp_path, capsys):
    """After only a search (no records) against the committed baseline: every row is not run, one command runs
    them all, and the gate fails because it compared nothing, not because anything regressed."""
    committed = REPO / "results" / "baselines" / "synthetic.json"
    (tmp_path / "synthetic" / "search").mkdir(parents=True)
    assert check(tmp_path, committed) == 1
    out = capsys.readouterr().out
    assert "regression" not in out and "nothing was compared" in out and "not run (6 of 6" in out
    assert (f"run them with: python -m bench run suite=synthetic "
            f"strategy=fuse_then_joint,gradnorm,naive_mtl,separate,uncertainty results_dir={tmp_path}") in out


def test_a_drop_within_the_baselines_seed_noise_passes():
    """sd 0.02 over 3 seeds in the baseline and 3 now: 3 standard errors of the difference = 4.9 points."""
    baseline = {"directions": {"a": {"accuracy": "max"}},
                "variants": {"r": {"n": 3, "metrics": {"a": {"accuracy": 0.80}}, "sd": {"a": {"accuracy": 0.02}}}}}
    now = lambda v: {"variants": {"r": {"n": 3, "metrics": {"a": {"accuracy": v}}}}}  # noqa: E731
    within, beyond = compare(baseline, now(0.76)), compare(baseline, now(0.74))
    assert within["status"].tolist() == ["ok"] and within["limit"].iloc[0] == pytest.approx(300 * 0.02 * (2 / 3) ** .5)
    assert beyond["status"].tolist() == ["regressed"]
    assert compare(baseline, now(0.76), z=0)["status"].tolist() == ["regressed"]  # the tolerance alone: 1 point


def test_help_names_every_option_and_bad_options_are_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    out = capsys.readouterr().out
    assert all(f"{key}=" in out or f"--{key}" in out for key in OPTIONS)
    assert HELP.splitlines()[1].strip() in out
    assert main(["check", "suite=synthetic", "tolerence=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'tolerance'" in err and "\n" not in err
    assert main(["check", "suite=synthetic", "throughput=fast"]) == 2
    assert "valid: off, relative, absolute" in capsys.readouterr().err
