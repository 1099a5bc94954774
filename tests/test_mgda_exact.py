"""Exact MGDA (``solver=exact``) against an exact reference, and Frank-Wolfe (``solver=frank_wolfe``) against torchjd.

The reference enumerates supports: for every subset S of the tasks it solves the problem restricted to the affine
hull of S (the KKT system [G_SS 1; 1ᵀ 0]), keeps the weights that are non-negative and whose KKT multipliers on
the other tasks, g_j·d − ‖d‖², are non-negative too, and takes the shortest d among them. For a convex problem every
such KKT point is the optimum, and an optimal support of affinely independent gradients exists (Carathéodory), so
subsets whose KKT system is singular are skipped. It is exponential in T (255 subsets at T = 8) and exact up to
float64 rounding.

The generated Jacobians (T = 2…8; :func:`cases`) are random, rank-deficient, with a zero row, wider than tall
(T > d), with a duplicate row, Pareto-stationary (0 in the hull), aligned (an interior optimum), and with row norms
spanning six decades. The direction d = αᵀJ is compared, not only its norm:

* float64: ‖d − d_ref‖ ≤ 1e-6·‖d_ref‖ + 1e-9·max_i ‖g_i‖ (the absolute floor matters only where d_ref = 0);
* float32 (the Jacobian, its Gramian and d in float32; the reference on the same rows in float64):
  ‖d − d_ref‖ ≤ 1e-5·‖d_ref‖ + 1e-6·max_i ‖g_i‖, for the rounding of the float32 Gramian and of d = αᵀJ (about
  6e-8 each; measured: 4e-7 relative where ‖d_ref‖ > 1e-4·max_i ‖g_i‖, 1e-7·max_i ‖g_i‖ absolute at the cases
  that are stationary before their rows are rounded to float32).

``scripts/mgda_error_table.py`` prints the errors of each solver on the same cases.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from bench.config import TaskConfig
from bench.weighting import Step, build_weighting

KINDS = ("random", "rank_deficient", "zero_row", "wide", "duplicate", "stationary", "aligned", "ill_scaled")
TOL = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-5, 1e-6)}  # (relative, absolute × max_i ‖g_i‖)


def make_case(kind: str, T: int, seed: int = 0) -> np.ndarray:
    """A T × d Jacobian of the given kind (float64), reproducible from (kind, T, seed)."""
    rng = np.random.default_rng([KINDS.index(kind), T, seed])
    d = 12
    J = rng.standard_normal((T, d))
    if kind == "rank_deficient":  # rank 2 (rank 1 at T = 2: two collinear rows)
        r = min(2, T - 1)
        J = rng.standard_normal((T, r)) @ rng.standard_normal((r, d))
    elif kind == "zero_row":
        J[rng.integers(T)] = 0.0
    elif kind == "wide":  # more tasks than dimensions
        J = rng.standard_normal((T, max(1, T // 2)))
    elif kind == "duplicate":
        J[-1] = J[0]
    elif kind == "stationary":  # g_T = −Σ c_i g_i with c_i > 0: 0 is in the hull
        c = rng.uniform(0.2, 1.0, T - 1)
        J[-1] = -(c @ J[:-1])
    elif kind == "aligned":  # a shared component: the optimum has every weight positive or lies inside a face
        J = 2.0 + 0.8 * rng.standard_normal((T, d))
    elif kind == "ill_scaled":
        J = J * np.logspace(-3, 3, T)[:, None]
    return J


def cases() -> list[tuple[str, int, np.ndarray]]:
    return [(kind, T, make_case(kind, T)) for kind in KINDS for T in range(2, 9)]


def reference(J: np.ndarray) -> np.ndarray:
    """The exact min-norm point of the convex hull of J's rows, by support enumeration with a KKT solve."""
    G = J @ J.T
    T, scale = len(G), max(float(np.max(np.diag(G))), 1e-300)
    best = None
    for r in range(1, T + 1):
        for S in map(list, itertools.combinations(range(T), r)):
            kkt = np.block([[G[np.ix_(S, S)] / scale, np.ones((r, 1))], [np.ones((1, r)), np.zeros((1, 1))]])
            if np.linalg.matrix_rank(kkt) < r + 1:
                continue  # affinely dependent gradients: a smaller support gives the same point
            a = np.linalg.solve(kkt, np.eye(r + 1)[-1])[:r]
            if a.min() < -1e-12:
                continue
            alpha = np.zeros(T)
            alpha[S] = a
            multipliers = (G @ alpha - alpha @ G @ alpha) / scale
            if np.delete(multipliers, S).min(initial=0.0) < -1e-10:
                continue
            d = alpha @ J
            if best is None or d @ d < best @ best:
                best = d
    assert best is not None
    return best


def check(d: np.ndarray, J: np.ndarray, dtype: torch.dtype, label: str) -> None:
    ref = reference(J)
    rel, floor = TOL[dtype]
    err, bound = np.linalg.norm(d - ref), rel * np.linalg.norm(ref) + floor * np.linalg.norm(J, axis=1).max()
    assert err <= bound, (label, err, bound, np.linalg.norm(ref))


def tasks(n: int) -> list[TaskConfig]:
    return [TaskConfig(name=f"t{i}", input="vector", target="regression") for i in range(n)]


def aggregate(J: torch.Tensor, via: str = "params", **params):
    """θ.grad after one backward of the linear losses θ·g_i (the Jacobian is J), the balancer, and its weights."""
    w = build_weighting("mgda", tasks(J.shape[0]), {**params, "via": via})
    theta = torch.zeros(J.shape[1], dtype=J.dtype, requires_grad=True)
    z = (theta + 0).unsqueeze(0)
    w.backward({f"t{i}": (z @ g).sum() for i, g in enumerate(J)}, Step(shared=[theta], features=[z]))
    return theta.grad, w, torch.tensor(list(w.current().values()))


# ------------------------------------------------------------------------------------------------ the exact solver

def test_the_reference_itself_on_hand_cases():
    # the segment between (1, 0) and (−1, 1): its min-norm point is (0.2, 0.4), at weights (0.6, 0.4)
    np.testing.assert_allclose(reference(np.array([[1.0, 0.0], [-1.0, 1.0]])), [0.2, 0.4], atol=1e-15)
    # acute pair: the shorter vector is the answer; opposite pair: 0
    np.testing.assert_allclose(reference(np.array([[1.0, 0.0], [2.0, 1.0]])), [1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(reference(np.array([[1.0, 2.0], [-2.0, -4.0]])), [0.0, 0.0], atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_exact_mgda_is_the_min_norm_point_on_every_generated_case(dtype):
    from torchjd.aggregation import GramianWeightedAggregator

    from bench.weighting.jd.min_norm import ExactMinNorm

    agg = GramianWeightedAggregator(ExactMinNorm())
    for kind, T, J in cases():
        Jt = torch.tensor(J, dtype=dtype)
        d = agg(Jt)
        assert d.dtype == dtype
        check(d.double().numpy(), Jt.double().numpy(), dtype, f"{kind} T={T}")
    assert agg.gramian_weighting.take_misses() == 0  # never at its cap


@pytest.mark.parametrize("via", ["params", "features"])
def test_the_balancer_gives_the_min_norm_point_by_either_path_and_records_its_weights(via):
    for kind, T, J in cases()[::5]:
        Jt = torch.tensor(J)
        d, w, weights = aggregate(Jt, via)
        # via=features takes its Jacobian in float32 (bench/weighting/jacobian.py), whatever the features' dtype
        check(d.numpy(), J, torch.float64 if via == "params" else torch.float32, f"{kind} T={T}")
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6) and bool((weights >= 0).all()), (kind, T)
        assert w.take_flags() == {}


def test_degenerate_inputs_give_the_zero_update_exactly():
    from bench.weighting.jd.min_norm import min_norm_weights

    for J in (torch.zeros(3, 4), torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]]),
              torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0]])):
        out = min_norm_weights(J @ J.T)
        assert out.converged and torch.equal(out.weights @ J, torch.zeros(J.shape[1])), J
        assert float(out.weights.sum()) == pytest.approx(1.0) and bool((out.weights >= 0).all())


def test_a_solver_at_its_cap_is_flagged_not_converged():
    J = torch.tensor(make_case("random", 6))
    _, w, _ = aggregate(J)
    assert w.take_flags() == {}
    w.agg.gramian_weighting.max_iters = 1  # one major step cannot reach a support of several tasks
    theta = torch.zeros(J.shape[1], dtype=J.dtype, requires_grad=True)
    w.backward({f"t{i}": theta @ g for i, g in enumerate(J)}, Step(shared=[theta], features=[theta.unsqueeze(0)]))
    assert w.take_flags() == {"not_converged": 1}
    _, fw, _ = aggregate(J, solver="frank_wolfe", epsilon=1e-12, max_iters=3)
    assert fw.take_flags() == {"not_converged": 1}


# ------------------------------------------------------------------------------------------------ Frank-Wolfe

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("eps_iters", [(1e-3, 100), (1e-9, 1000)], ids=["default", "tight"])
def test_frank_wolfe_is_torchjds_mgda_bit_for_bit(dtype, eps_iters):
    from torchjd.aggregation import MGDA

    eps, iters = eps_iters
    theirs = MGDA(epsilon=eps, max_iters=iters)
    for kind, T, J in cases()[:: 1 if iters == 100 else 8]:  # the tight loop is slow: one case in 8
        Jt = torch.tensor(J, dtype=dtype)
        w = build_weighting("mgda", tasks(T), {"solver": "frank_wolfe", "epsilon": eps, "max_iters": iters})
        assert torch.equal(w.agg(Jt), theirs(Jt)), (kind, T)
