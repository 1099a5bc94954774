"""The check that a leaderboard's marks hold: a seed-disjoint A/A simulation with known variance components
(bench.calibration). The leaderboard's two-level t must mark two copies of one configuration at most α + 0.025 of
the time at k = 3 and 5 seeds, and its 95 % intervals must cover the expected score (over seeds and test sets) in
[0.90, 0.99] of the tables; the percentile bootstrap the leaderboard used before must fail the same check, so the
check can fail.

Tolerances: with 1000 tables a rate of 0.05 has a standard error of 0.007, so α + 0.025 is about 3.6 standard errors
above α. The coverage band's lower edge is 0.87, not 0.95 − 3 SE: the simulated seed effect on Pearson r is skewed,
and a t interval over 3–5 skewed values covers 0.925–0.935 even with no test-set noise at all (measured with 4000
draws); the two-level interval measures 0.89–0.93 on that column and 0.92–0.97 on the others.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from bench import calibration, twolevel

ALPHA = 0.05
SIZE_TOLERANCE = 0.025
COVERAGE_BAND = (0.87, 0.99)


@pytest.mark.parametrize("k", [3, 5])
def test_two_level_t_holds_its_size_and_covers_at_k_seeds(k):
    result = calibration.run(k, groups=1000, method="twolevel")
    for column, rate in result["false_mark"].items():
        assert rate <= ALPHA + SIZE_TOLERANCE, (k, column, rate)
    for column, coverage in result["coverage"].items():
        assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1], (k, column, coverage)
    assert result["any"]["false_mark"] <= ALPHA + SIZE_TOLERANCE  # at least one mark in a row, after Holm


def test_the_check_fails_the_percentile_bootstrap_used_before():
    """Resampling 3 seeds spans about [min, max] of them: on the seed-dominated column the old intervals cover far
    less than 95 % and the old test marks A/A copies far more often than α."""
    result = calibration.run(3, groups=120, method="bootstrap", B=400)
    assert result["false_mark"]["reg"] > ALPHA + SIZE_TOLERANCE
    assert result["coverage"]["reg"] < COVERAGE_BAND[0]


def test_expected_accuracy_of_the_simulation_is_its_closed_form():
    world = calibration.World(n=200)
    rng = np.random.default_rng(1)
    hits = [calibration.simulate_models(world, 4, rng)["cls"] for _ in range(300)]
    accuracy = np.mean([(pred == target[None, :]).mean() for target, pred in hits])
    assert accuracy == pytest.approx(world.expected_cls(), abs=0.005)


# ----------------------------------------------------------------------------------------------- the formula's parts


@pytest.mark.parametrize("name", ["accuracy", "macro_f1", "mcc", "f1", "pearson", "mse", "mae"])
def test_pseudo_values_are_the_delete_one_jackknife(name):
    """Closed forms equal recomputing the metric with each example left out."""
    rng = np.random.default_rng(0)
    n = 40
    if name in ("pearson", "mse", "mae"):
        target = rng.standard_normal(n)
        pred = target + rng.standard_normal(n)
    else:
        classes = 2 if name == "f1" else 3
        target = rng.integers(0, classes, n)
        pred = np.where(rng.random(n) < 0.7, target, rng.integers(0, classes, n))
    theta, psi = twolevel.pseudo_values(name, target, pred)
    from bench.metrics import compute

    full = compute([name], target, pred)[name]
    loo = np.array([compute([name], np.delete(target, i), np.delete(pred, i))[name] for i in range(n)])
    assert theta == pytest.approx(full, abs=1e-12)
    assert psi == pytest.approx(n * full - (n - 1) * loo, abs=1e-9)


def test_jackknife_variance_of_macro_f1_agrees_with_a_large_bootstrap():
    rng = np.random.default_rng(3)
    n = 400
    target = rng.integers(0, 4, n)
    pred = np.where(rng.random(n) < 0.6, target, rng.integers(0, 4, n))
    _, psi = twolevel.pseudo_values("macro_f1", target, pred)
    jack = np.var(psi, ddof=1) / n
    from bench import stats

    idx = rng.integers(0, n, (4000, n))
    boot = np.var(stats.metric_matrix("macro_f1", target, pred, idx), ddof=1)
    assert jack == pytest.approx(boot, rel=0.12)


def test_a_paired_difference_without_test_noise_is_the_paired_t_test():
    """With no test-set term the two-level test of two rows that share their seeds is scipy's paired t-test."""
    seeds = (0, 1, 2, 3)
    a = twolevel.Scores(seeds, np.array([70.0, 72.0, 69.0, 75.0]), {})
    b = twolevel.Scores(seeds, np.array([68.0, 71.0, 69.5, 71.0]), {})
    est = twolevel.estimate([(1.0, a), (-1.0, b)])
    assert est.paired and est.df == pytest.approx(3.0)
    assert est.p == pytest.approx(sst.ttest_rel(a.x, b.x).pvalue)


def test_disjoint_seeds_without_test_noise_are_welchs_t_test():
    a = twolevel.Scores((0, 1, 2), np.array([70.0, 72.0, 69.0]), {})
    b = twolevel.Scores((3, 4, 5, 6), np.array([68.0, 71.0, 66.5, 69.0]), {})
    est = twolevel.estimate([(1.0, a), (-1.0, b)])
    assert not est.paired
    assert est.p == pytest.approx(sst.ttest_ind(a.x, b.x, equal_var=False).pvalue)


def test_one_seed_is_the_test_set_variance_alone():
    target = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    pred = np.array([[0, 1, 0, 0, 1, 1, 1, 1]])
    s = twolevel.Scores.of("accuracy", target, pred, (0,), "t")
    est = twolevel.estimate([(1.0, s)])
    z = (pred[0] == target).astype(float)
    assert est.test_only and math.isinf(est.df) and math.isnan(est.seed_sd)
    assert est.var == pytest.approx(np.var(z, ddof=1) / len(z))
