"""bench.stats: vectorised bootstrap metrics, paired replicates, intervals, tests and corrections.

Checked against bench.metrics, scipy and hand-computed values, not only for running.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sst

from bench import metrics as bench_metrics
from bench import stats
from bench.errors import BenchError
from bench.stats import Draws

CLASSIFICATION = ["accuracy", "macro_f1", "mcc"]
REGRESSION = ["pearson", "spearman", "mse", "mae"]


def reference(name: str, target: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # sklearn warns on single-label replicates; those are exactly the ones we want
        warnings.simplefilter("ignore", UserWarning)
        return np.array([bench_metrics.compute([name], target[row], pred[row])[name] for row in idx])


def degenerate_rows(n: int) -> np.ndarray:
    """Replicates that hit edge cases: one example repeated (constant everything), two examples only."""
    return np.array([[0] * n, [n - 1] * n, [0, 1] * (n // 2) + [0] * (n % 2)])


# ---------------------------------------------------------------------------------------------------------------------
# metric_matrix


def test_every_bench_metric_is_vectorised():
    assert set(stats.VECTORISED) == set(bench_metrics.METRICS)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_metric_matrix_matches_bench_metrics_multiclass(name):
    rng = np.random.default_rng(1)
    n = 12  # small n and 3 classes: many replicates lack a class in target, pred or both
    target = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.6, target, rng.integers(0, 3, n))
    idx = np.vstack([rng.integers(0, n, (50, n)), degenerate_rows(n)])
    got = stats.metric_matrix(name, target, pred, idx)
    assert got.shape == (idx.shape[0],)
    np.testing.assert_allclose(got, reference(name, target, pred, idx), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_metric_matrix_non_contiguous_labels(name):
    rng = np.random.default_rng(2)
    n = 15
    labels = np.array([0, 2, 7])
    target, pred = labels[rng.integers(0, 3, n)], labels[rng.integers(0, 3, n)]
    idx = rng.integers(0, n, (50, n))
    np.testing.assert_allclose(stats.metric_matrix(name, target, pred, idx), reference(name, target, pred, idx),
                               rtol=0, atol=1e-9)


def test_macro_f1_averages_over_labels_present_in_the_replicate():
    target = np.array([0, 0, 1, 2])
    pred = np.array([0, 1, 1, 0])
    # replicate 0: examples 0, 1 -> y_true {0}, y_pred {0, 1}: labels {0, 1}; f1(0) = 2/3, f1(1) = 0 -> 1/3.
    # class 2 appears in neither and must not be averaged in (which would give 2/9).
    # replicate 1: examples 2, 2 -> labels {1}: f1(1) = 1 -> 1.
    # replicate 2: example 3 -> y_true {2}, y_pred {0}: both f1 = 0 -> 0.
    idx = np.array([[0, 1], [2, 2], [3, 3]])
    np.testing.assert_allclose(stats.metric_matrix("macro_f1", target, pred, idx), [1 / 3, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(reference("macro_f1", target, pred, idx), [1 / 3, 1.0, 0.0], atol=1e-12)


def test_metric_matrix_binary_f1_and_degenerate_replicates():
    rng = np.random.default_rng(3)
    n = 10
    target = rng.integers(0, 2, n)
    pred = rng.integers(0, 2, n)
    pred[0], target[0] = 0, 0  # an all-0 replicate: no positive anywhere -> f1 0 (zero_division=0)
    idx = np.vstack([rng.integers(0, n, (50, n)), degenerate_rows(n)])
    for name in ["f1", *CLASSIFICATION]:
        np.testing.assert_allclose(stats.metric_matrix(name, target, pred, idx), reference(name, target, pred, idx),
                                   rtol=0, atol=1e-9, err_msg=name)


def test_metric_matrix_f1_on_other_labels_defers_to_sklearn():
    target, pred = np.array([1, 2, 2, 1]), np.array([1, 2, 1, 1])
    idx = np.array([[0, 1, 2, 3], [0, 3, 2, 2]])
    np.testing.assert_allclose(stats.metric_matrix("f1", target, pred, idx), reference("f1", target, pred, idx))
    with pytest.raises(ValueError):  # sklearn refuses a multiclass target for a binary f1; so must we
        stats.metric_matrix("f1", np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([[0, 1, 2]]))


@pytest.mark.parametrize("name", REGRESSION)
def test_metric_matrix_matches_bench_metrics_regression(name):
    rng = np.random.default_rng(4)
    n = 20
    target = rng.integers(0, 12, n) / 4  # quarter steps: ties for spearman, exactly constant replicates possible
    pred = target + rng.normal(0, 1, n)
    idx = np.vstack([rng.integers(0, n, (50, n)), degenerate_rows(n)])
    np.testing.assert_allclose(stats.metric_matrix(name, target, pred, idx), reference(name, target, pred, idx),
                               rtol=0, atol=1e-9)
    # a constant prediction has no correlation: bench.metrics scores it 0, and so must the vectorised version
    constant = np.full(n, 2.5)
    got = stats.metric_matrix(name, target, constant, idx)
    np.testing.assert_allclose(got, reference(name, target, constant, idx), rtol=0, atol=1e-9)
    if name in ("pearson", "spearman"):
        assert np.all(got == 0.0)


def test_correlations_by_hand():
    target = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([2.0, 4.0, 6.0, 9.0])
    idx = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [0, 0, 0, 0]])
    # spearman: ranks identical -> 1; pearson of (1,2,3,4) vs (2,4,6,9): computed by hand with centred sums
    x, y = target - 2.5, pred - 5.25
    r = (x @ y) / math.sqrt((x @ x) * (y @ y))
    np.testing.assert_allclose(stats.metric_matrix("pearson", target, pred, idx), [r, r, 0.0])
    np.testing.assert_allclose(stats.metric_matrix("spearman", target, pred, idx), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(stats.metric_matrix("mae", target, pred, idx), [2.75, 2.75, 1.0])
    np.testing.assert_allclose(stats.metric_matrix("mse", target, pred, idx), [(1 + 4 + 9 + 25) / 4] * 2 + [1.0])


def test_metric_matrix_chunks_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(5)
    n = 9
    target, pred = rng.integers(0, 3, n), rng.integers(0, 3, n)
    ytrue, ypred = rng.normal(size=n), rng.normal(size=n)
    idx = rng.integers(0, n, (40, n))
    whole = {m: stats.metric_matrix(m, target, pred, idx) for m in CLASSIFICATION}
    whole |= {m: stats.metric_matrix(m, ytrue, ypred, idx) for m in REGRESSION}
    monkeypatch.setattr(stats.vectorised, "_CHUNK_ELEMENTS", 25)  # 2 replicates per chunk, the last one partial
    for m in CLASSIFICATION:
        np.testing.assert_array_equal(stats.metric_matrix(m, target, pred, idx), whole[m])
    for m in REGRESSION:
        np.testing.assert_array_equal(stats.metric_matrix(m, ytrue, ypred, idx), whole[m])


def test_metric_matrix_falls_back_to_bench_metrics_for_other_names(monkeypatch):
    monkeypatch.setitem(bench_metrics.METRICS, "max_error", (lambda y, p: float(np.max(np.abs(y - p))), "min"))
    target, pred = np.array([0.0, 1.0, 3.0]), np.array([0.5, 1.0, 1.0])
    idx = np.array([[0, 1, 2], [0, 0, 1], [1, 1, 1]])
    np.testing.assert_allclose(stats.metric_matrix("max_error", target, pred, idx), [2.0, 0.5, 0.0])
    with pytest.raises(BenchError, match="accuracyy"):
        stats.metric_matrix("accuracyy", target, pred, idx)


def test_hand_computed_bootstrap_accuracies():
    target = np.array([0, 1, 1, 0])
    pred = np.array([0, 1, 0, 0])  # right on examples 0, 1, 3
    idx = np.array([[0, 1, 2, 3], [2, 2, 2, 2], [0, 0, 1, 3], [1, 2, 1, 2]])
    np.testing.assert_allclose(stats.metric_matrix("accuracy", target, pred, idx), [0.75, 0.0, 1.0, 0.5])


def test_metric_matrix_rejects_bad_shapes():
    with pytest.raises(ValueError):
        stats.metric_matrix("accuracy", np.zeros(3), np.zeros(4), np.zeros((2, 3), int))
    with pytest.raises(ValueError):
        stats.metric_matrix("accuracy", np.zeros(3), np.zeros(3), np.zeros(3, int))


# ---------------------------------------------------------------------------------------------------------------------
# draw, replicate_scores, interval


def test_draw_shapes_flags_and_determinism():
    d = stats.draw({"a": 7, "b": 3}, n_seeds=4, B=50, seed=3)
    assert d.B == 50 and d.over_seeds
    assert d.examples["a"].shape == (50, 7) and d.examples["b"].shape == (50, 3)
    assert d.seeds.shape == (50, 4)
    assert d.examples["a"].min() >= 0 and d.examples["a"].max() < 7
    assert d.seeds.min() >= 0 and d.seeds.max() < 4
    assert len(np.unique(d.seeds)) > 1
    again = stats.draw({"a": 7, "b": 3}, n_seeds=4, B=50, seed=3)
    for t in ("a", "b"):
        np.testing.assert_array_equal(d.examples[t], again.examples[t])
    np.testing.assert_array_equal(d.seeds, again.seeds)
    other = stats.draw({"a": 7, "b": 3}, n_seeds=4, B=50, seed=4)
    assert not np.array_equal(d.examples["a"], other.examples["a"])
    assert not np.array_equal(d.seeds, other.seeds)
    # tasks are resampled independently of each other and of which other tasks are in the table
    alone = stats.draw({"a": 7}, n_seeds=4, B=50, seed=3)
    np.testing.assert_array_equal(alone.examples["a"], d.examples["a"])


def test_draw_single_seed_and_read_only():
    d = stats.draw({"a": 5}, n_seeds=1, B=20)
    assert not d.over_seeds
    np.testing.assert_array_equal(d.seeds, np.zeros((20, 1), int))
    with pytest.raises(ValueError):
        d.examples["a"][0, 0] = 1  # shared by every row: must not be editable in place
    with pytest.raises(AttributeError):
        d.B = 3  # frozen


def test_draws_validates_shapes():
    with pytest.raises(ValueError):
        Draws(examples={"a": np.zeros((3, 4), int)}, seeds=np.zeros((2, 1), int), B=2, over_seeds=False)


def test_replicate_scores_hand_made_draws():
    target = np.array([0, 1, 1, 0])
    preds = np.array([[0, 1, 0, 0],   # seed 0: right on 0, 1, 3
                      [1, 1, 1, 0]])  # seed 1: right on 1, 2, 3
    draws = Draws(examples={"t": np.array([[0, 1, 2, 3], [0, 0, 1, 2], [2, 2, 3, 3]])},
                  seeds=np.array([[0, 0], [0, 1], [1, 1]]), B=3, over_seeds=True)
    # b0: seed 0 twice on all examples: 0.75
    # b1: examples 0,0,1,2 -> seed 0: 3/4, seed 1: 2/4 -> mean 0.625
    # b2: examples 2,2,3,3 -> seed 1 twice: 1.0
    np.testing.assert_allclose(stats.replicate_scores("accuracy", target, preds, draws, "t"), [0.75, 0.625, 1.0])
    with pytest.raises(ValueError):
        stats.replicate_scores("accuracy", target, preds[:1], draws, "t")


def test_replicate_scores_matches_brute_force():
    rng = np.random.default_rng(6)
    n, n_seeds = 15, 3
    target = rng.normal(size=n)
    preds = target + rng.normal(size=(n_seeds, n))
    draws = stats.draw({"t": n}, n_seeds=n_seeds, B=30, seed=1)
    got = stats.replicate_scores("spearman", target, preds, draws, "t")
    want = [np.mean([sst.spearmanr(target[ex], preds[s][ex])[0] for s in seeds])
            for ex, seeds in zip(draws.examples["t"], draws.seeds)]
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_interval_of_known_replicates():
    assert stats.interval(np.arange(101), level=0.9) == (5.0, 95.0)
    assert stats.interval(np.arange(101)) == (2.5, 97.5)
    assert stats.interval(np.r_[np.arange(101), np.nan, np.nan], level=0.5) == (25.0, 75.0)  # NaN ignored
    lo, hi = stats.interval(np.full(5, np.nan))
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(BenchError):
        stats.interval(np.arange(10), level=95)


def test_bootstrap_interval_agrees_with_wilson():
    n, k = 400, 320
    target = np.ones(n, int)
    pred = np.r_[np.ones(k, int), np.zeros(n - k, int)]
    draws = stats.draw({"t": n}, n_seeds=1, B=2000, seed=1)
    lo, hi = stats.interval(stats.replicate_scores("accuracy", target, pred[None], draws, "t"))
    wlo, whi = stats.wilson(k, n)
    assert abs(lo - wlo) < 0.015 and abs(hi - whi) < 0.015
    assert lo < 0.8 < hi


def test_bootstrap_interval_coverage_on_bernoulli_data():
    rng = np.random.default_rng(7)
    n, p, sims = 200, 0.8, 200
    target = np.ones(n, int)
    covered = 0
    for i in range(sims):
        pred = (rng.random(n) < p).astype(int)
        draws = stats.draw({"t": n}, n_seeds=1, B=1000, seed=i)
        lo, hi = stats.interval(stats.replicate_scores("accuracy", target, pred[None], draws, "t"))
        covered += lo <= p <= hi
    assert 0.90 <= covered / sims <= 0.985


# ---------------------------------------------------------------------------------------------------------------------
# wilson, mcnemar, paired bootstrap, permutation


def test_wilson_matches_closed_form():
    k, n, z = 30, 50, sst.norm.ppf(0.975)
    centre = (k + z**2 / 2) / (n + z**2)
    half = z / (n + z**2) * math.sqrt(k * (n - k) / n + z**2 / 4)
    np.testing.assert_allclose(stats.wilson(k, n), (centre - half, centre + half), atol=1e-12)
    lo90, hi90 = stats.wilson(k, n, level=0.9)
    assert centre - half < lo90 < hi90 < centre + half
    assert all(math.isnan(v) for v in stats.wilson(0, 0))


def test_mcnemar_hand_case_and_symmetry():
    # 8 examples only a gets right, 2 only b gets right, 5 both, 3 neither
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 3, bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 3, bool)
    assert stats.mcnemar(a, b) == pytest.approx(0.109375, abs=1e-12)
    assert stats.mcnemar(a, b) == pytest.approx(sst.binomtest(8, 10).pvalue, abs=1e-15)
    assert stats.mcnemar(b, a) == stats.mcnemar(a, b)
    assert stats.mcnemar(a, a) == 1.0
    assert stats.mcnemar(np.array([1, 0, 1], bool), np.array([1, 0, 1], bool)) == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar(a, b[:-1])


def test_paired_bootstrap_p():
    rng = np.random.default_rng(8)
    assert stats.paired_bootstrap_p(rng.normal(0.05, 0.01, 2000)) < 0.01
    assert stats.paired_bootstrap_p(-rng.normal(0.05, 0.01, 2000)) < 0.01
    x = rng.normal(0, 1, 1000)
    assert stats.paired_bootstrap_p(np.r_[x, -x]) == 1.0  # symmetric around 0
    assert stats.paired_bootstrap_p(rng.normal(0, 1, 2000)) > 0.8
    # by hand: d <= 0 once, d >= 0 three times in B = 4 -> 2 * (1 + 1) / 5
    assert stats.paired_bootstrap_p(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.8)
    assert stats.paired_bootstrap_p(np.array([1.0, 2.0, 3.0, 4.0, np.nan])) == pytest.approx(2 / 5)
    assert math.isnan(stats.paired_bootstrap_p(np.array([np.nan])))


def test_paired_bootstrap_p_a_a_is_one_and_a_real_gap_is_small():
    rng = np.random.default_rng(9)
    n = 300
    target = rng.integers(0, 2, n)
    good = np.where(rng.random((2, n)) < 0.9, target, 1 - target)
    bad = np.where(rng.random((2, n)) < 0.7, target, 1 - target)
    draws = stats.draw({"t": n}, n_seeds=2, B=1000, seed=0)
    a = stats.replicate_scores("accuracy", target, good, draws, "t")
    a_again = stats.replicate_scores("accuracy", target, good.copy(), draws, "t")
    assert stats.paired_bootstrap_p(a - a_again) == 1.0
    b = stats.replicate_scores("accuracy", target, bad, draws, "t")
    assert stats.paired_bootstrap_p(a - b) < 0.01


def test_permutation_p_agrees_with_scipy():
    rng = np.random.default_rng(10)
    x = rng.normal(0.3, 1, 15)
    y = rng.normal(0, 1, 15)
    kw = {stats._PERM_RNG: 0}
    want = sst.permutation_test((x, y), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples",
                                alternative="two-sided", n_resamples=999, **kw).pvalue
    assert stats.permutation_p(x, y, n_resamples=999, seed=0) == pytest.approx(want, abs=1e-12)
    median = lambda a, b, axis: np.median(a - b, axis=axis)
    want = sst.permutation_test((x, y), median, permutation_type="samples", alternative="two-sided",
                                n_resamples=999, **kw).pvalue
    assert stats.permutation_p(x, y, statistic=median, n_resamples=999, seed=0) == pytest.approx(want, abs=1e-12)
    assert stats.permutation_p(x, x, n_resamples=999) == 1.0
    assert stats.permutation_p(x + 5, x, n_resamples=999) < 0.01


def test_permutation_p_exact_hand_case():
    # 3 pairs, all differences +1: the 8 sign flips give means -1, -1/3 (x3), 1/3 (x3), 1; |mean| >= 1 in 2 of 8
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0])
    assert stats.permutation_p(x, y) == pytest.approx(0.25)


# ---------------------------------------------------------------------------------------------------------------------
# multiple comparisons


def test_holm_hand_case():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], atol=1e-12)
    np.testing.assert_allclose(stats.holm([0.5, 0.6, 0.01]), [1.0, 1.0, 0.03], atol=1e-12)  # capped at 1
    assert stats.holm([]).shape == (0,)


def test_holm_properties_and_nan():
    rng = np.random.default_rng(11)
    p = rng.random(12) ** 3
    adj = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)  # monotone in the raw p-values
    assert np.all(adj >= p) and np.all(adj <= 1)
    got = stats.holm([0.01, np.nan, 0.04, 0.03, 0.005])
    assert math.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2, 3, 4]], [0.03, 0.06, 0.06, 0.02], atol=1e-12)  # NaN is not a test


def test_bh_against_scipy_and_hand():
    rng = np.random.default_rng(12)
    p = rng.random(20) ** 2
    np.testing.assert_allclose(stats.bh(p), sst.false_discovery_control(p, method="bh"))
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4 = 0.02, 0.02, 0.04, 0.04
    np.testing.assert_allclose(stats.bh([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02], atol=1e-12)
    got = stats.bh([np.nan, 0.01, 0.04, 0.03, 0.005])
    assert math.isnan(got[0])
    np.testing.assert_allclose(got[1:], [0.02, 0.04, 0.04, 0.02], atol=1e-12)
    assert np.isnan(stats.bh([np.nan])).all()


def test_adjust():
    p = [0.01, 0.04, np.nan]
    np.testing.assert_array_equal(stats.adjust(p, "holm"), stats.holm(p))
    np.testing.assert_array_equal(stats.adjust(p, "bh"), stats.bh(p))
    np.testing.assert_array_equal(stats.adjust(p, "none"), np.array(p))
    assert set(stats.CORRECTIONS) == {"holm", "bh", "none"}
    with pytest.raises(BenchError, match="bonferroni") as err:
        stats.adjust(p, "bonferroni")
    assert all(m in str(err.value) for m in stats.CORRECTIONS)


# ---------------------------------------------------------------------------------------------------------------------
# check_level, mde


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, True, float("nan"), "0.9", None])
def test_check_level_rejects(level):
    with pytest.raises(BenchError, match="confidence level") as err:
        stats.check_level(level)
    assert repr(level) in str(err.value)


def test_check_level_accepts():
    assert stats.check_level(0.9) == 0.9
    assert stats.check_level(np.float64(0.95)) == 0.95
    assert stats.LEVEL == 0.95


def test_mde_with_known_standard_deviations():
    rng = np.random.default_rng(13)

    def with_sd(sd: float) -> np.ndarray:
        x = rng.normal(size=1000)
        return (x - x.mean()) / x.std(ddof=1) * sd

    reps = [with_sd(0.01), with_sd(0.03), with_sd(0.02)]
    assert stats.mde(reps) == pytest.approx((1.959964 + 0.841621) * 0.02, rel=1e-6)
    assert stats.mde([with_sd(0.02)], alpha=0.1, power=0.9) == pytest.approx(
        (sst.norm.ppf(0.95) + sst.norm.ppf(0.9)) * 0.02, rel=1e-12)
    assert math.isnan(stats.mde([]))
