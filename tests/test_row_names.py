"""Row names without repetition: a budget re-run names its rows with each configuration key once, spelled as on
the command line (``separate[budget.match=samples]``, not ``separate[budget.match=samples,budget_match=samples]``),
and a row the re-run computed identically (the same stages, the same test metrics) is one row, not two."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.cli import main
from bench.report import build_leaderboards
from bench.report.records import load_records
from tests.conftest import FAST

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def rerun(tmp_path_factory):
    results = tmp_path_factory.mktemp("names") / "results"
    for extra in ([], ["budget.match=samples"]):
        assert main(["run", *FAST, "strategy=separate,naive_mtl", f"results_dir={results}", *extra]) == 0
    return results


def test_a_key_appears_once_under_its_command_line_spelling(rerun):
    names = {r.variant(row) for r in load_records(rerun, "synthetic") for row in r.rows}
    assert {"separate[budget.match=none]", "separate[budget.match=samples]"} <= names
    assert not any("budget_match" in n for n in names)


def test_an_unchanged_row_is_listed_once(rerun):
    """naive_mtl's matched budget is its own (it is the reference): both runs computed the same stages, so it is one
    row, from the budget whose baseline row is the newest; separate's fine-tunes changed, so it is two."""
    records = load_records(rerun, "synthetic")
    pairs = Counter((r.variant(row), r.seed) for r in records for row in r.rows)
    assert set(pairs.values()) == {1}  # no (row, seed) counted twice
    naive = [r for r in records for row in r.rows if r.variant(row) == "naive_mtl"]
    assert len(naive) == 1 and naive[0].budget_match == "samples"
    boards, _ = build_leaderboards(rerun, "synthetic")
    assert sorted(boards[0].table.index) == ["naive_mtl", "separate[budget.match=none]",
                                             "separate[budget.match=samples]"]
