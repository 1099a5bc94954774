"""Each registered weighting and aggregator on a tiny case with a known answer, and the engine's balancer seam.

The gradient-level cases use linear losses L_i = z·g_i with z = θ (a shared parameter, also the shared feature), so
the Jacobian is exactly the matrix J = [g_1; …; g_T] and θ.grad after ``backward`` is the aggregated update, by either
path (``via=params``: torchjd's Jacobian over θ; ``via=features``: the Jacobian over z, carried back to θ).
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from bench.config import TaskConfig
from bench.errors import BenchError
from bench.weighting import WEIGHTINGS, Aggregator, Step, build_weighting

VIAS = ["params", "features"]
CONFLICT = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # g1·g2 = −1: the two tasks conflict
THREE = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0], [0.3, 0.2, 1.0]])
MIXED = torch.tensor([[1.0, 0.2, -0.3], [-0.8, 0.5, 0.1], [0.1, -0.9, 0.4]])


def tasks(n: int) -> list[TaskConfig]:
    return [TaskConfig(name=f"t{i}", input="vector", target="regression") for i in range(n)]


def aggregate(name: str, J: torch.Tensor, via: str = "params", **params):
    """θ.grad and the recorded weights after one backward of the linear losses z·g_i."""
    w = build_weighting(name, tasks(J.shape[0]), {**params, "via": via})
    theta = torch.zeros(J.shape[1], requires_grad=True)
    z = (theta + 0).unsqueeze(0)
    w.backward({f"t{i}": (z @ g).sum() for i, g in enumerate(J)}, Step(shared=[theta], features=[z]))
    return theta.grad, torch.tensor(list(w.current().values()))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


# ------------------------------------------------------------------------------------------------ gradient level

@pytest.mark.parametrize("via", VIAS)
def test_pcgrad_projects_conflicting_pair_by_hand(via):
    # g1' = g1 − (g1·g2/|g2|²) g2 = (1,0) + ½(−1,1) = (½,½); g2' = g2 − (g2·g1/|g1|²) g1 = (0,1); sum (½, 3/2)
    d, _ = aggregate("pcgrad", CONFLICT, via)
    assert torch.allclose(d, torch.tensor([0.5, 1.5]), atol=1e-6)
    agree, _ = aggregate("pcgrad", torch.tensor([[1.0, 0.5], [0.5, 1.0]]), via)  # no conflict: the plain sum
    assert torch.allclose(agree, torch.tensor([1.5, 1.5]), atol=1e-6)


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("J", [CONFLICT, THREE, MIXED], ids=["pair", "three", "mixed"])
def test_mgda_is_the_min_norm_point_of_the_hull(via, J):
    """Checked by its optimality conditions, not by the norm (flat at the optimum): weights on the simplex, and
    g_i·d ≥ ‖d‖² for every task, with equality where the weight is positive (then d is the min-norm point). The
    exact solver against a support-enumeration reference on many Jacobians: tests/test_mgda_exact.py."""
    d, w = aggregate("mgda", J, via)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6) and bool((w >= 0).all())
    torch.testing.assert_close(d, w @ J, rtol=1e-6, atol=1e-7)  # the update is the weighted sum it recorded
    slack = J @ d - d @ d  # the KKT multipliers (‖d‖² is the minimum's value)
    assert bool((slack >= -1e-6).all()) and float(slack[w > 1e-6].abs().max()) < 1e-6, (w, slack)
    if J is CONFLICT:  # by hand: the segment between (1, 0) and (−1, 1) is nearest 0 at (0.2, 0.4), weights (.6, .4)
        torch.testing.assert_close(d, torch.tensor([0.2, 0.4]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("via", VIAS)
def test_mgda_frank_wolfe_is_torchjds_mgda(via):
    from torchjd.aggregation import MGDA

    d, w = aggregate("mgda", THREE, via, solver="frank_wolfe", epsilon=1e-6, max_iters=10_000)
    torch.testing.assert_close(d, MGDA(epsilon=1e-6, max_iters=10_000)(THREE), rtol=0, atol=0)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("J", [CONFLICT, MIXED], ids=["pair", "three"])
def test_upgrad_and_dualproj_never_conflict_with_a_task(via, J):
    for name in ("upgrad", "dualproj"):
        d, _ = aggregate(name, J, via)
        assert bool((J @ d >= -5e-4).all()), (name, (J @ d).tolist())  # up to the solver's regularisation (1e-4)
        assert float(d.norm()) > 0
    # without conflict UPGrad is the mean, unchanged
    agree = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    d, _ = aggregate("upgrad", agree, via)
    assert torch.allclose(d, agree.mean(0), atol=1e-4)


@pytest.mark.parametrize("via", VIAS)
def test_imtl_g_has_equal_projections_on_the_unit_task_gradients(via):
    for J in (CONFLICT, THREE):
        d, _ = aggregate("imtl_g", J, via)
        proj = (J / J.norm(dim=1, keepdim=True)) @ d
        assert torch.allclose(proj, proj[0].expand_as(proj), rtol=1e-4), proj.tolist()


@pytest.mark.parametrize("via", VIAS)
def test_config_has_equal_cosine_with_every_task(via):
    for J in (CONFLICT, MIXED):
        d, w = aggregate("config", J, via)
        c = [cos(d, g) for g in J]
        assert max(c) - min(c) < 1e-4 and min(c) > 0, c
        assert bool(torch.isnan(w).all())  # not a weighted sum of the gradients: no weights to record


@pytest.mark.parametrize("via", VIAS)
def test_graddrop_keeps_one_sign_per_coordinate(via):
    torch.manual_seed(0)
    J = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.5]])
    pos, neg = J.clamp(min=0).sum(0), J.clamp(max=0).sum(0)
    seen = set()
    for _ in range(20):
        d, w = aggregate("graddrop", J, via)
        for j in range(3):
            assert float(d[j]) in (pytest.approx(float(pos[j])), pytest.approx(float(neg[j]))), (j, d.tolist())
        seen.add(float(d[0]))
        assert bool(torch.isnan(w).all())  # not a weighted sum: no weights to record
    assert seen == {1.0, -1.0}  # the conflicting coordinate keeps either sign, sampled by purity


@pytest.mark.parametrize("via", VIAS)
def test_gradvac_first_step_with_target_zero_equals_pcgrad(via):
    # the EMA target similarity starts at 0, and GradVac's correction towards cosine 0 is PCGrad's projection
    d, _ = aggregate("gradvac", CONFLICT, via)
    assert torch.allclose(d, torch.tensor([0.5, 1.5]), atol=1e-5)


@pytest.mark.parametrize("via", VIAS)
def test_cagrad_c0_is_the_mean_and_c_improves_the_worst_task(via):
    d0, _ = aggregate("cagrad", CONFLICT, via, c=0.0)
    assert torch.allclose(d0, CONFLICT.mean(0), atol=1e-4)
    d, _ = aggregate("cagrad", CONFLICT, via, c=0.5)
    assert float((CONFLICT @ d).min()) > float((CONFLICT @ d0).min()) + 0.1  # the worst task gains


@pytest.mark.parametrize("via", VIAS)
def test_nash_mtl_solves_the_bargaining_condition(via):
    # Nash bargaining: α_i · (g_i · Σ_j α_j g_j) = 1 for every task (before the max_norm clip)
    d, alpha = aggregate("nash_mtl", THREE, via, max_norm=1e6, optim_niter=50)
    G = THREE @ THREE.T
    assert torch.allclose(alpha * (G @ alpha), torch.ones(3), atol=1e-3)
    assert torch.allclose(d, alpha @ THREE, atol=1e-4)


@pytest.mark.parametrize("via", VIAS)
def test_fairgrad_alpha_one_is_proportional_fairness(via):
    # α-fair with α = 1: (G w)_i = 1 / w_i, solved by hand for the conflicting pair: w = (√2 a, a), a² = 1/(2 − √2)
    d, w = aggregate("fairgrad", CONFLICT, via, alpha=1.0)
    a = math.sqrt(1 / (2 - math.sqrt(2)))
    assert torch.allclose(w, torch.tensor([math.sqrt(2) * a, a]), rtol=1e-3)
    assert torch.allclose(d, w @ CONFLICT, atol=1e-4)


@pytest.mark.parametrize("via", VIAS)
def test_aligned_mtl_equalises_orthogonal_gradients_to_the_smallest_norm(via):
    # orthogonal rows of norms 2 and 1: both rescaled to σ_min = 1, averaged: (½, ½)
    d, _ = aggregate("aligned_mtl", torch.tensor([[2.0, 0.0], [0.0, 1.0]]), via)
    assert torch.allclose(d, torch.tensor([0.5, 0.5]), atol=1e-5)


def test_features_path_needs_one_shared_representation():
    w = build_weighting("pcgrad", tasks(2), {"via": "features"})
    theta = torch.zeros(2, requires_grad=True)
    with pytest.raises(BenchError, match="via=params"):
        w.backward({"t0": theta.sum(), "t1": theta.sum()}, Step(shared=[theta], features=[theta[None], theta[None]]))


# ------------------------------------------------------------------------------------------------ loss level

def scalarize(name: str, values: list[float], **params):
    w = build_weighting(name, tasks(len(values)), params)
    leaf = torch.tensor(values, requires_grad=True)
    w.backward({f"t{i}": leaf[i] for i in range(len(values))}, Step())
    return w, leaf.grad


def test_dwa_weights_from_a_given_loss_history():
    w = build_weighting("dwa", tasks(2), {"temperature": 2.0})
    for epoch_losses in ([1.0, 1.0], [0.5, 1.0]):  # two epochs: task 0 halved its loss, task 1 did not
        for _ in range(3):
            w.backward({"t0": torch.tensor(epoch_losses[0], requires_grad=True),
                        "t1": torch.tensor(epoch_losses[1], requires_grad=True)}, Step())
        w.end_epoch(0, dict(zip(["t0", "t1"], epoch_losses)))
    w.current()  # drop the uniform weights of the first two epochs
    leaf = torch.tensor([0.3, 0.7], requires_grad=True)
    w.backward({"t0": leaf[0], "t1": leaf[1]}, Step())
    r = torch.tensor([0.5, 1.0]) / 2.0  # r_i / τ
    want = 2 * torch.softmax(r, 0)
    assert torch.allclose(leaf.grad, want, atol=1e-6)
    assert w.current() == pytest.approx(dict(zip(["t0", "t1"], want.tolist())))


def test_gls_is_the_geometric_mean_with_weights_G_over_T_L():
    w, g = scalarize("gls", [1.0, 4.0, 2.0])
    G = (1.0 * 4.0 * 2.0) ** (1 / 3)
    assert float(w.combine({"t0": torch.tensor(1.0), "t1": torch.tensor(4.0), "t2": torch.tensor(2.0)})) == \
        pytest.approx(G, rel=1e-6)
    assert torch.allclose(g, G / (3 * torch.tensor([1.0, 4.0, 2.0])), rtol=1e-5)


def test_rlw_weights_are_positive_sum_to_T_and_change_every_step():
    torch.manual_seed(0)
    seen = []
    for _ in range(5):
        _, g = scalarize("rlw", [1.0, 1.0, 1.0, 1.0])
        assert float(g.sum()) == pytest.approx(4.0, rel=1e-6) and bool((g > 0).all())
        seen.append(g)
    assert len({tuple(x.tolist()) for x in seen}) == 5


def test_stch_is_a_soft_max_of_the_losses():
    mu, L = 0.5, torch.tensor([1.0, 2.0, 0.5])
    w, g = scalarize("stch", L.tolist(), mu=mu)
    assert torch.allclose(g, torch.softmax(L / mu, 0), atol=1e-6)  # weights: softmax(L/μ), the largest loss first
    small, _ = scalarize("stch", L.tolist(), mu=1e-3)
    assert float(small.combine({f"t{i}": L[i] for i in range(3)})) == pytest.approx(2.0, abs=2e-3)  # μ → 0: max


def test_imtl_l_scales_and_their_gradient_by_hand():
    w = build_weighting("imtl_l", tasks(2))
    L = torch.tensor([2.0, 0.5], requires_grad=True)
    total = w.combine({"t0": L[0], "t1": L[1]})
    assert float(total) == pytest.approx(2.5)  # s = 0: e^0·L − 0
    (groups,) = w.param_groups(1e-3)
    assert groups["weight_decay"] == 0.0
    total.backward()
    s_grad = torch.cat([p.grad.reshape(-1) for p in groups["params"]])
    assert torch.allclose(s_grad, torch.tensor([2.0 - 1, 0.5 - 1]))  # ∂/∂s (e^s L − s) = e^s L − 1


def test_famo_weights_are_c_z_over_L_and_favour_the_task_that_fell_less():
    w = build_weighting("famo", tasks(2), {"lr": 0.5})
    L = torch.tensor([2.0, 1.0], requires_grad=True)
    w.backward({"t0": L[0], "t1": L[1]}, Step())
    z = torch.tensor([0.5, 0.5])
    c = 1 / (z / L.detach()).sum()
    assert torch.allclose(L.grad, c * z / L.detach(), rtol=1e-5)
    # after the update task 0's loss halved and task 1's did not move: FAMO raises task 1's weight
    w.after_step(Step(recompute=lambda: {"t0": torch.tensor(1.0), "t1": torch.tensor(1.0)}))
    zs = torch.softmax(w.scalarizer._w.detach(), 0)
    assert float(zs[1]) > float(zs[0])


# ------------------------------------------------------------------------------------------------ registry and input

def test_at_least_eighteen_methods_each_with_a_paper_line():
    names = WEIGHTINGS.names()
    want = {"equal", "gradnorm", "mgda", "uncertainty", "dwa", "gls", "graddrop", "pcgrad", "gradvac", "imtl_g",
            "cagrad", "rlw", "nash_mtl", "aligned_mtl", "upgrad", "dualproj", "config", "famo"}
    assert want <= set(names) and len(names) >= 18
    for name, line in WEIGHTINGS.describe().items():
        assert line, f"{name} has no docstring"


def test_bad_names_params_and_missing_extras_fail_in_one_line(monkeypatch):
    with pytest.raises(BenchError, match=r"unknown weighting 'pcgard' \(did you mean 'pcgrad'\?\)"):
        build_weighting("pcgard", tasks(2))
    with pytest.raises(BenchError, match="weighting 'cagrad'.*c"):
        build_weighting("cagrad", tasks(2), {"c": -1})
    with pytest.raises(BenchError, match="weighting 'dwa'.*temperature"):
        build_weighting("dwa", tasks(2), {"temperature": 0})
    with pytest.raises(BenchError, match="weighting 'mgda'.*nope"):
        build_weighting("mgda", tasks(2), {"nope": 1})
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # as if the extra were not installed
    with pytest.raises(BenchError, match=r"weighting 'nash_mtl' needs cvxpy.*pip install 'mtbench\[full\]'"):
        build_weighting("nash_mtl", tasks(2))


@pytest.mark.parametrize("name", ["upgrad", "pcgrad", "config"])
def test_multi_input_jacobian_by_task_equals_torchjds(name):
    """With one batch per task the Jacobian is taken task by task; torchjd's vectorised backward gives the same."""
    torch.manual_seed(0)
    W = torch.randn(4, 3, requires_grad=True)
    xs = [torch.randn(5, 3) for _ in range(3)]
    targets = [torch.randn(5, 4) for _ in range(3)]

    def grad(per_task: bool) -> torch.Tensor:
        W.grad = None
        feats = [x @ W.T for x in xs]
        losses = {f"t{i}": (f - y).pow(2).mean() for i, (f, y) in enumerate(zip(feats, targets))}
        w = build_weighting(name, tasks(3), {"via": "params"})
        w.backward(losses, Step(shared=[W], features=feats if per_task else None))
        return W.grad.clone()

    assert torch.allclose(grad(True), grad(False), atol=1e-5)


# ------------------------------------------------------------------------------------------------ Step.jacobian

def _net_step(via: str, single_input: bool = True):
    """Three tasks on a two-layer shared body (two shared parameters, so the Jacobian's columns span both) with one
    linear head each; the losses and the Step the engine would hand a balancer."""
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5))
    heads = {f"t{i}": list(torch.nn.Linear(5, 1).parameters()) for i in range(3)}
    xs = [torch.randn(8, 4)] if single_input else [torch.randn(8, 4) for _ in range(3)]
    feats = [body(x) for x in xs]
    losses = {}
    for i, (t, (w, b)) in enumerate(heads.items()):
        z = feats[0] if single_input else feats[i]
        losses[t] = ((z @ w.T + b).squeeze(1) - torch.linspace(-1, 1, 8) * (i + 1)).pow(2).mean()
    params = [*body.parameters(), *(p for ps in heads.values() for p in ps)]
    return losses, Step(shared=list(body.parameters()), heads=heads, features=feats, forwards=len(xs)), params


def _grads(balancer, via: str, single_input: bool = True) -> list[torch.Tensor]:
    losses, step, params = _net_step(via, single_input)
    balancer.backward(losses, step)
    return [p.grad.clone() for p in params]


class SumOfRows(Aggregator):
    """The plug-in an author writes with the Step's Jacobian: the sum of the task gradients (equal's update)."""

    uses_features = True  # only needed for via="features"

    def __init__(self, tasks, params=None, via: str = "params", aggregate=lambda J: J.sum(dim=0)):
        super().__init__(tasks, params)
        self.via, self.aggregate = via, aggregate

    def backward(self, losses, step: Step) -> None:
        J = step.jacobian(losses, via=self.via)  # T × P; each head already got its own task's gradient
        step.set_shared_grad(self.aggregate(J))


@pytest.mark.parametrize("via", VIAS)
def test_a_custom_aggregator_on_the_step_jacobian_gives_the_builtin_update(via):
    """Sum of the Jacobian's rows = ``equal`` (one backward of Σ L_i), and torchjd's UPGrad applied to it = the
    built-in ``upgrad`` bit for bit, by either path."""
    equal = _grads(build_weighting("equal", tasks(3)), via)
    for a, b in zip(_grads(SumOfRows(tasks(3), via=via), via), equal, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    from torchjd.aggregation import UPGrad

    ours = _grads(SumOfRows(tasks(3), via=via, aggregate=UPGrad()), via)
    builtin = _grads(build_weighting("upgrad", tasks(3), {"via": via}), via)
    assert all(torch.equal(a, b) for a, b in zip(ours, builtin, strict=True))


@pytest.mark.parametrize("single_input", [True, False], ids=["vectorised", "by_task"])
@pytest.mark.parametrize("name", ["upgrad", "pcgrad", "mgda", "config", "dualproj"])
def test_the_params_path_is_torchjds_backward_and_jac_to_grad_bit_for_bit(name, single_input):
    """The adapter's ``via=params`` update equals torchjd's ``jac_to_grad`` exactly, the Jacobian from torchjd's
    ``autojac.backward`` (one input) or task by task (one batch per task), as the adapter took it before the Step
    helper existed."""
    from torchjd.autojac import backward, jac_to_grad

    ours = _grads(build_weighting(name, tasks(3), {"via": "params"}), "params", single_input)
    losses, step, params = _net_step("params", single_input)
    heads = [p for ps in step.heads.values() for p in ps]
    for p, g in zip(heads, torch.autograd.grad(torch.stack(list(losses.values())).sum(), heads, retain_graph=True)):
        p.grad = g
    if single_input:
        backward(list(losses.values()), inputs=step.shared)
    else:
        rows = [torch.autograd.grad(loss, step.shared, retain_graph=True) for loss in losses.values()]
        for i, p in enumerate(step.shared):
            p.jac = torch.stack([r[i] for r in rows])
    jac_to_grad(step.shared, build_weighting(name, tasks(3)).agg)
    assert all(torch.equal(a, p.grad) for a, p in zip(ours, params, strict=True))


def test_features_are_declared_and_the_helper_says_what_it_needs():
    assert not Aggregator.uses_features and WEIGHTINGS.get("upgrad").uses_features
    losses, step, _ = _net_step("params", single_input=False)
    with pytest.raises(BenchError, match="needs the one shared representation of a single-input step"):
        step.jacobian(losses, via="features")
    with pytest.raises(BenchError, match="needs a Jacobian first"):
        Step().set_shared_grad(torch.zeros(1))
