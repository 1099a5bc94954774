"""Degenerate steps of the gradient-level methods are counted (bench/weighting/jd/degenerate.py): each event fires on
a Jacobian that triggers it and not on a benign one, on both Jacobian paths, and a real training stage's telemetry
counts them per event.

The Jacobians are exact: linear losses L_i = z·g_i with z = θ, so J = [g_1; …; g_T] (as in tests/test_aggregators.py).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from bench.config import TaskConfig
from bench.weighting import Step, build_weighting
from bench.weighting.jd import degenerate as dg

VIAS = ["params", "features"]
BENIGN = [[1.0, 0.2, 0.0], [0.0, 1.0, 0.1], [0.3, 0.0, 2.0]]  # no conflict: far from stationary
CONFLICT = [[1.0, 0.0], [-1.0, 1.0]]  # conflicting, not stationary (the hull's min-norm point is (0.2, 0.4))
SPREAD = [[1.0, 0.0], [0.0, 1e-2]]  # norms 100x apart, orthogonal: not stationary
ZERO_ROW = [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # task 1 has no gradient: stationary
OPPOSITE = [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # g0 + g1 = 0: stationary, g2 free
PAIR_OPPOSITE = [[1.0, 0.5], [-1.0, -0.5]]  # stationary, nothing else to improve
TINY = [[1e-3 * x for x in row] for row in BENIGN]  # benign, total squared norm below CAGrad's norm_eps 1e-4
FAIR_DEGENERATE = [[1.0, 0.5, 0.0], [-1.0, -0.5, 0.0], [0.0, 0.0, 1.0]]


def tasks(n: int) -> list[TaskConfig]:
    return [TaskConfig(name=f"t{i}", input="vector", target="regression") for i in range(n)]


def flags(name: str, J: list[list[float]], via: str = "params", **params) -> tuple[dict[str, int], torch.Tensor]:
    """The events one backward of the linear losses z·g_i flagged, and the update θ.grad."""
    J = torch.tensor(J)
    w = build_weighting(name, tasks(J.shape[0]), {**params, "via": via})
    theta = torch.zeros(J.shape[1], requires_grad=True)
    z = (theta + 0).unsqueeze(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")  # cvxpy's, on the degenerate cases
        w.backward({f"t{i}": (z @ g).sum() for i, g in enumerate(J)}, Step(shared=[theta], features=[z]))
    return w.take_flags(), theta.grad


@pytest.mark.parametrize("via", VIAS)
def test_nash_mtl_flags_its_fallback_and_its_iteration_cap(via):
    assert flags("nash_mtl", BENIGN, via)[0] == {} and flags("nash_mtl", CONFLICT, via)[0] == {}
    got, d = flags("nash_mtl", ZERO_ROW, via)
    assert got == {"fallback": 1}  # no bargaining solution: the clipped sum of the gradients (the initial weights)
    assert torch.allclose(d, torch.tensor([1.0, 1.0, 0.0]) / 2**0.5)
    assert flags("nash_mtl", OPPOSITE, via)[0] == {"fallback": 1}
    assert flags("nash_mtl", BENIGN, via, optim_niter=1)[0] == {"not_converged": 1}  # one Newton step is short


def test_nash_mtl_cvxpy_flags_torchjds_failed_solves():
    """torchjd's solver (solver=cvxpy) keeps its previous weights when ECOS fails: on a zero row, and at the first
    step of the conflicting pair, where G·1 has a zero entry (log 0 in its first approximation), as the Newton
    solver does not."""
    assert flags("nash_mtl", BENIGN, solver="cvxpy")[0] == {}
    got, d = flags("nash_mtl", CONFLICT, solver="cvxpy")
    assert got == {"fallback": 1} and torch.allclose(d, torch.tensor([0.0, 1.0]))  # the clipped sum
    assert flags("nash_mtl", ZERO_ROW, solver="cvxpy")[0] == {"fallback": 1}


@pytest.mark.parametrize("via", VIAS)
def test_fairgrad_flags_weights_beyond_the_bound_and_unsolved_equations(via):
    for J in (BENIGN, CONFLICT, SPREAD):
        assert flags("fairgrad", J, via)[0] == {}, J
    assert flags("fairgrad", FAIR_DEGENERATE, via)[0] == {"weight_bound": 1, "not_converged": 1}
    assert flags("fairgrad", ZERO_ROW, via)[0] == {"not_converged": 1}  # (G w)_1 = 0 ≠ 1/w_1


def test_fairgrad_bound_is_on_the_scale_free_weights():
    G = np.array(FAIR_DEGENERATE) @ np.array(FAIR_DEGENERATE).T
    w = np.array([2e3, 2e3, 1.0])
    assert dg.WEIGHT_BOUND in dg.fairgrad_events(G, w, 1.0)
    # the same problem with gradients 100x longer has weights 100x smaller (α = 1): the same verdict
    assert dg.WEIGHT_BOUND in dg.fairgrad_events(1e4 * G, w / 100, 1.0)
    assert dg.WEIGHT_BOUND not in dg.fairgrad_events(G, np.array([900.0, 900.0, 1.0]), 1.0)


@pytest.mark.parametrize("via", VIAS)
def test_cagrad_flags_a_zero_update_on_a_nonzero_jacobian(via):
    assert flags("cagrad", BENIGN, via)[0] == {} and flags("cagrad", CONFLICT, via)[0] == {}
    for J in (ZERO_ROW, PAIR_OPPOSITE, TINY):  # 0 in the hull, or trace(G) < norm_eps: torchjd returns 0
        got, d = flags("cagrad", J, via)
        assert got == {"zero_update": 1} and float(d.norm()) == 0.0, J


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
@pytest.mark.parametrize("via", VIAS)
def test_dual_cone_methods_flag_a_nonzero_update_at_a_stationary_point(name, via):
    for J in (BENIGN, CONFLICT, SPREAD, TINY):
        assert flags(name, J, via)[0] == {}, J
    for J in (ZERO_ROW, OPPOSITE):  # stationary, yet they move along the third gradient
        got, d = flags(name, J, via)
        assert got == {"stationary_nonzero": 1} and float(d.norm()) > 0.1, J
    got, d = flags(name, PAIR_OPPOSITE, via)  # stationary and the update is zero: nothing to say
    assert got == {} and float(d.norm()) < 1e-6


def test_stationarity_is_the_min_norm_point_of_the_unit_gradients():
    rng = np.random.default_rng(0)
    grid = [w for w in itertools.product(np.linspace(0, 1, 101), repeat=2) if sum(w) <= 1]
    for _ in range(5):
        J = rng.standard_normal((3, 2)) * np.array([[1.0], [10.0], [0.1]])
        U = J / np.linalg.norm(J, axis=1, keepdims=True)
        brute = min(float(np.sum((a * U[0] + b * U[1] + (1 - a - b) * U[2]) ** 2)) for a, b in grid)
        exact = dg.hull_min_norm_sq(J @ J.T)
        assert exact <= brute + 1e-9 and brute - exact <= 1e-3  # quadprog's rounding; the grid's resolution
    assert dg.stationary(np.array([[1.0, 0.0], [0.0, 0.0]]))  # a zero row
    assert not dg.stationary(np.array([[1.0, 0.0], [0.0, 1e-12]]))  # a short gradient pointing elsewhere
    G = np.array(CONFLICT) @ np.array(CONFLICT).T
    assert not dg.stationary(G, np.array([0.5, 0.5]))  # certified by the direction, without the QP


@pytest.mark.integration
def test_a_training_stage_counts_the_degenerate_steps_per_event(tmp_path):
    """CAGrad with norm_eps above every Gramian's trace returns 0 at every step: telemetry counts each one."""
    from bench.backbones.simple import MLP
    from bench.config import TrainConfig
    from bench.engine import Trainer
    from bench.model import MultiTaskModel
    from tests.test_faults import two_task_data

    tcs, data, pre = two_task_data(single_input=True)  # single input: every head reads one batch
    runs = {}
    for norm_eps in (1e6, 1e-4):
        torch.manual_seed(0)
        tr = Trainer(MultiTaskModel(MLP(8, 16, 2), tcs), tcs, data,
                     build_weighting("cagrad", tcs, {"norm_eps": norm_eps}),
                     TrainConfig(epochs=2, batch_size=16, lr=1e-2, num_workers=0, log_every=3), 0, pre.collate, True,
                     work_dir=tmp_path / str(norm_eps))
        runs[norm_eps] = tr.fit().telemetry
    assert runs[1e6]["steps"] == 8 and runs[1e6]["degenerate"] == {"zero_update": 8}
    assert "degenerate" not in runs[1e-4]  # the paper's setting on this model: never degenerate
