"""A suite's YAML may set report defaults (``report: {delta_m: all}``, the dense literature's Δm% over every metric);
a command line's key wins, an unknown key is refused in one line, and results never depend on them."""

from __future__ import annotations

import pytest
import yaml

from bench.plan import build_suite
from bench.report import suite_report_defaults


def _suite_file(tmp_path, report):
    raw = yaml.safe_load(open("suites/synthetic.yaml"))
    raw["report"] = report
    path = tmp_path / "synthetic_report.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_suite_sets_defaults_and_the_command_line_wins(tmp_path):
    path = _suite_file(tmp_path, {"delta_m": "all", "interval": "pm"})
    assert suite_report_defaults(str(path), {"delta_m": None, "level": None}) == {"delta_m": "all", "interval": "pm"}
    assert suite_report_defaults(str(path), {"delta_m": "primary"})["delta_m"] == "primary"
    assert suite_report_defaults("no_such_suite_anywhere", {"level": 0.9}) == {"level": 0.9}


def test_report_defaults_leave_the_results_configuration_alone(tmp_path):
    plain = build_suite({"suite": "synthetic"})
    with_defaults = build_suite({"suite": str(_suite_file(tmp_path, {"delta_m": "all"}))})
    assert with_defaults.report == {"delta_m": "all"}
    assert with_defaults.results_dump() == plain.results_dump()


def test_an_unknown_report_key_is_one_line(tmp_path):
    with pytest.raises(Exception, match=r"report: key 'delta' is not a report default; valid keys: delta_m, level"):
        build_suite({"suite": str(_suite_file(tmp_path, {"delta": "all"}))})


def test_a_one_example_split_gets_no_interval_and_no_traceback(tmp_path):
    """A split of one example (a tiny fixture, a carved validation of 10% of 6) has no test-set term: its scores
    show without an interval instead of failing the whole report."""
    import numpy as np

    from bench.report import build_leaderboards
    from tests.test_report_stats import SUITE, write_record

    target = np.array([1])
    for seed in (0, 1, 2):
        write_record(tmp_path, label="separate", seed=seed, preds={"a": target}, targets={"a": target})
        write_record(tmp_path, label="naive_mtl", seed=seed, preds={"a": 1 - target}, targets={"a": target})
    board = build_leaderboards(tmp_path, SUITE)[0][0]
    assert board.table.loc["naive_mtl", "a/accuracy"] == 0.0
