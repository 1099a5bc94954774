"""The histogram-median recipe of bench.stats.ratios: numpy's median when every value sits alone at a bin centre,
within one bin otherwise, resampled (leave-one-out, bootstrap replicates) exactly as recomputed on the resampled
examples, and its one-line refusals; ratio recipes parse as before."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.errors import BenchError
from bench.stats.ratios import HistogramMedian, Ratios, parse_recipe, recipes_of

COLUMNS = ["n", *(f"b@{j}" for j in range(10))]
RECIPE = {"median": {"bins": "b@", "width": 0.5, "low": 1.0}, "bounds": [1, 6]}


def _hist(values: list[float]) -> np.ndarray:
    """One example's stats row: its count, then its values' histogram over bins [1 + 0.5·j, 1.5 + 0.5·j)."""
    row = np.zeros(len(COLUMNS))
    row[0] = len(values)
    for v in values:
        row[1 + int((v - 1.0) / 0.5)] += 1
    return row


def test_median_of_values_at_bin_centres_is_numpys():
    m = parse_recipe("med", RECIPE, COLUMNS)
    assert isinstance(m, HistogramMedian) and m.bounds == (1.0, 6.0)
    examples = [[1.25, 3.75], [2.25], [5.75, 4.25, 1.75], []]
    stats = np.stack([_hist(v) for v in examples])
    assert m.value(stats) == np.median([v for e in examples for v in e])  # 6 values: mean of the 3rd and 4th
    assert m.value(stats[[1]]) == 2.25 and m.value(stats[[3]]) == 0.0  # no value: 0, as a ratio with no denominator
    loo = m.leave_one_out(stats)
    for i in range(4):
        rest = [v for j, e in enumerate(examples) if j != i for v in e]
        assert loo[i] == np.median(rest)
    idx = np.array([[0, 0, 1, 3], [2, 2, 2, 2], [3, 3, 3, 1]])
    reps = m.replicates(stats, idx)
    for b, row in enumerate(idx):
        assert reps[b] == np.median([v for i in row for v in examples[i]])


def test_values_sharing_a_bin_are_spread_evenly_over_it():
    m = parse_recipe("med", RECIPE, COLUMNS)
    stats = _hist([2.1, 2.2, 2.3, 2.4])[None]  # four values in [2.0, 2.5): at 2.0625, 2.1875, 2.3125, 2.4375
    assert m.value(stats) == pytest.approx((2.1875 + 2.3125) / 2)
    rng = np.random.default_rng(0)
    values = [list(rng.uniform(1.0, 6.0, size=rng.integers(1, 30))) for _ in range(8)]
    stats = np.stack([_hist(v) for v in values])
    assert abs(m.value(stats) - np.median(np.concatenate(values))) < 0.5  # within one bin


@pytest.mark.parametrize(("recipe", "message"), [
    ({"median": {"bins": "c@", "width": 0.5}}, r"bins 'c@' must prefix stats columns c@0, c@1, \.\.\. in that order"),
    ({"median": {"bins": "b@", "width": 0}}, r"width must be > 0, got 0"),
    ({"median": {"bins": "b@", "width": math.inf}}, r"width must be a finite number"),
    ({"median": {"bins": "b@", "width": 1, "scale": 2}}, r"must be \{\"median\": \{\"bins\": \"angle_bin@\""),
    ({"median": "b@"}, r"must be \{\"median\""),
    ({"median": {"bins": "b@", "width": 1}, "bounds": [2, 1]}, r"bounds must be \[low, high\] with low < high"),
])
def test_bad_median_recipes_are_refused_in_one_line(recipe, message):
    with pytest.raises(BenchError, match=message) as e:
        recipes_of({"stats": COLUMNS, "recipes": {"med": recipe}})
    assert "\n" not in str(e.value)


def test_bins_must_be_in_order():
    with pytest.raises(BenchError, match="in that order"):
        parse_recipe("med", RECIPE, ["n", "b@1", "b@0"])


def test_ratio_recipes_parse_as_before():
    recipe = {"ratios": [{"num": {"b@0": 1}, "den": {"n": 1}}]}
    r = parse_recipe("r", recipe, COLUMNS)
    assert type(r) is Ratios and r.value(np.array([[2.0, 1.0] + [0.0] * 9])) == 0.5
