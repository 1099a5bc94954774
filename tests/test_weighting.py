"""Defining properties of the learned weightings (uncertainty, GradNorm) on problems with a known answer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.config import TaskConfig
from bench.errors import BenchError
from bench.weighting import build_weighting
from bench.weighting import gradnorm as gradnorm_mod
from bench.weighting.gradnorm import GradNorm, GradNormParams
from bench.weighting.uncertainty import Uncertainty, UncertaintyParams


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run ~30× faster on one thread than on two contended ones; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def reg(name: str) -> TaskConfig:
    return TaskConfig(name=name, input="vector", target="regression")


def cls(name: str, k: int = 3) -> TaskConfig:
    return TaskConfig(name=name, input="vector", target="classification", num_classes=k)


class TinyMTL(nn.Module):
    """A MultiTaskModel look-alike: ``backbone`` (with ``shared_layer``) and ``heads``."""

    def __init__(self, tasks: list[str], d_in: int = 4, hidden: int = 16, linear: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        act: nn.Module = nn.Identity() if linear else nn.Tanh()
        self.backbone = nn.Sequential(nn.Linear(d_in, hidden), act, nn.Linear(hidden, hidden), nn.Identity()
                                      if linear else nn.Tanh())
        self.backbone.shared_layer = "2"
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, 1) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.backbone(x)
        return {t: head(h).squeeze(-1) for t, head in self.heads.items()}


# ------------------------------------------------------------------------------------------------ uncertainty

def test_uncertainty_forms_by_hand():
    w = Uncertainty([reg("r"), cls("c")], UncertaintyParams())
    with torch.no_grad():
        w.log_vars[0].fill_(0.7)
        w.log_vars[1].fill_(-0.4)
    Lr, Lc = torch.tensor(1.3), torch.tensor(2.1)
    got = w.combine({"r": Lr, "c": Lc})
    want = 0.5 * math.exp(-0.7) * 1.3 + 0.5 * 0.7 + math.exp(0.4) * 2.1 + 0.5 * (-0.4)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # the two forms differ exactly by the factor ½ on the data term, at the same s and L
    only_r = w.combine({"r": Lr}).item()
    w2 = Uncertainty([cls("r")], UncertaintyParams())
    with torch.no_grad():
        w2.log_vars[0].fill_(0.7)
    only_c = w2.combine({"r": Lr}).item()
    assert only_c - only_r == pytest.approx(0.5 * math.exp(-0.7) * 1.3, rel=1e-6)
    assert w.current() == pytest.approx({"r": math.exp(0.7), "c": math.exp(-0.4)})


def test_uncertainty_subset_of_tasks_touches_only_present_s():
    w = Uncertainty([reg("a"), reg("b"), cls("c")])
    w.combine({"b": torch.tensor(3.0)}).backward()
    assert w.log_vars[0].grad is None and w.log_vars[2].grad is None
    # d/ds (½ e^{-s} L + ½ s) at s=0, L=3: −1.5 + 0.5
    assert w.log_vars[1].grad.item() == pytest.approx(-1.0)


def test_uncertainty_param_group_has_no_weight_decay_and_own_lr():
    w = build_weighting("uncertainty", [reg("a"), cls("b")], {"lr": 0.05})
    (g,) = w.param_groups(lr=1e-3)
    assert g["weight_decay"] == 0.0 and g["lr"] == 0.05
    assert {id(p) for p in g["params"]} == {id(p) for p in w.log_vars}
    assert build_weighting("uncertainty", [reg("a")]).param_groups(lr=1e-3)[0]["lr"] == 1e-3
    # an AdamW with weight decay on the model group leaves s alone: s at its fixed point (L = 1) does not move
    model = nn.Linear(2, 1)
    opt = torch.optim.AdamW([{"params": model.parameters()}, *w.param_groups(1e-3)], lr=1e-3, weight_decay=0.5)
    with torch.no_grad():
        w.log_vars[0].fill_(0.0)
        w.log_vars[1].fill_(math.log(2.0))  # classification fixed point: σ² = 2L
    for _ in range(5):
        opt.zero_grad()
        w.combine({"a": torch.tensor(1.0), "b": torch.tensor(1.0)}).backward()
        opt.step()
    assert w.log_vars[0].item() == pytest.approx(0.0, abs=1e-6)
    assert w.log_vars[1].item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_uncertainty_recovers_known_noise_variances():
    """y_t = a_t·x + ε_t with Var ε_t = σ_t² in {0.01, 0.25, 1.0} (a 100× range), one shared linear backbone.

    The learned e^{s_t} recovers σ_t² within 10 % (reached: ≤ 4 %, the sampling error of 2,000 noise draws), and
    equals the fitted residual variance within 1 % (the regression form's fixed point σ² = L).
    """
    torch.manual_seed(0)
    sig2 = {"t0": 0.01, "t1": 0.25, "t2": 1.0}
    n, d, steps = 2000, 4, 400
    x = torch.randn(n, d)
    A = torch.randn(3, d)
    ys = {t: x @ A[i] + math.sqrt(s2) * torch.randn(n) for i, (t, s2) in enumerate(sig2.items())}
    model = TinyMTL(list(sig2), d_in=d, hidden=8, linear=True)
    w = Uncertainty([reg(t) for t in sig2])
    w.setup(model)
    opt = torch.optim.Adam([{"params": model.parameters()}, *w.param_groups(0.05)], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):  # full batch: the fixed point is then exact, not blurred by minibatch noise
        out = model(x)
        losses = {t: (out[t] - ys[t]).pow(2).mean() for t in sig2}
        opt.zero_grad()
        w.combine(losses).backward()
        opt.step()
        sched.step()
        w.after_step()
    learned = w.current()
    with torch.no_grad():
        out = model(x)
    for t, s2 in sig2.items():
        assert learned[t] == pytest.approx(s2, rel=0.10), (t, learned[t], s2)
        assert learned[t] == pytest.approx(float((out[t] - ys[t]).pow(2).mean()), rel=0.01)


# ------------------------------------------------------------------------------------------------ GradNorm

def scaled_problem(scales=(1.0, 100.0, 10.0), n=512, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    ys = {f"t{i}": s * torch.tanh(x @ torch.randn(d, generator=g)) for i, s in enumerate(scales)}
    return x, ys


def train(weighting, x, ys, steps, seed=0, lr=1e-2):
    """The engine's loop; returns the per-step G_i = w_i·‖∇_W L_i‖ (from the weighting's telemetry)."""
    model = TinyMTL(list(ys), d_in=x.shape[1], seed=seed)
    weighting.setup(model)
    opt = torch.optim.Adam([{"params": model.parameters()}, *weighting.param_groups(lr)], lr=lr)
    g = torch.Generator().manual_seed(seed)
    history, sums = [], []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        out = model(x[idx])
        losses = {t: (out[t] - y[idx]).pow(2).mean() for t, y in ys.items()}
        opt.zero_grad()
        weighting.combine(losses).backward()
        opt.step()
        weighting.after_step()
        history.append(dict(weighting.last_G))
        sums.append(sum(weighting.current().values()))
    return model, history, sums


def spread(G: dict[str, float]) -> float:
    return max(G.values()) / min(G.values())


def mean_G(history: list[dict[str, float]]) -> dict[str, float]:
    """G_i averaged over steps (single-batch G_i are noisy)."""
    return {k: sum(g[k] for g in history) / len(history) for k in history[0]}


def test_gradnorm_weights_sum_to_T_after_every_step_and_spread_of_G_shrinks():
    """Targets scaled ×1, ×100, ×10: max/min of G_i (mean over the last 100 of 300 steps) falls from ≈ 66 under
    equal weighting to ≈ 5 under GradNorm (not to 1: GradNorm aims G_i at mean(G)·r_i^α, not at equal norms)."""
    x, ys = scaled_problem()
    T = len(ys)
    gn = GradNorm([reg(t) for t in ys], GradNormParams(lr=0.025, warmup_steps=5))
    _, hist_gn, sums = train(gn, x, ys, steps=300)
    assert all(s == pytest.approx(T, abs=1e-5) for s in sums)
    assert all(w >= gn.params.min_weight * 0.99 for w in gn.current().values())
    # equal weighting measured the same way: GradNorm with a learning rate of ~0 keeps w = 1
    eq = GradNorm([reg(t) for t in ys], GradNormParams(lr=1e-12, optimizer="sgd"))
    _, hist_eq, _ = train(eq, x, ys, steps=300)
    late_gn, late_eq = spread(mean_G(hist_gn[-100:])), spread(mean_G(hist_eq[-100:]))
    early = spread(hist_gn[0])  # w = 1 at step 0: the same as equal weighting
    assert early > 20 and late_eq > 20  # the ×100 task dominates the shared layer's gradient
    assert late_gn < 8 and late_gn < late_eq / 5, (late_gn, late_eq)
    # and w compensates the loss scales: the ×100 task gets the smallest weight
    w = gn.current()
    assert w["t1"] == min(w.values())


def test_gradnorm_warmup_keeps_w_and_estimates_L0_from_k_steps():
    x, ys = scaled_problem(scales=(1.0, 5.0))
    gn = GradNorm([reg(t) for t in ys], GradNormParams(warmup_steps=4, lr=0.1))
    model = TinyMTL(list(ys))
    gn.setup(model)
    seen = []
    for step in range(6):
        out = model(x[step * 8:(step + 1) * 8])
        losses = {t: (out[t] - y[step * 8:(step + 1) * 8]).pow(2).mean() for t, y in ys.items()}
        seen.append(torch.stack([losses[t].detach() for t in ys]))
        gn.combine(losses).backward()
        gn.after_step()
        if step < 4:
            assert gn.current() == {"t0": 1.0, "t1": 1.0}
            assert gn.weights.grad is None
    assert torch.allclose(gn.loss_sum0 / 4, torch.stack(seen[:4]).mean(0))
    assert gn.current() != {"t0": 1.0, "t1": 1.0}


def test_gradnorm_norms_only_at_W_network_gets_weighted_sum_w_gets_analytic_grad(monkeypatch):
    x, ys = scaled_problem(scales=(1.0, 30.0))
    tasks = list(ys)
    model = TinyMTL(tasks)
    gn = GradNorm([reg(t) for t in tasks], GradNormParams(warmup_steps=1, alpha=1.5))
    gn.setup(model)
    W = list(model.backbone[2].parameters())
    with torch.no_grad():
        gn.weights.copy_(torch.tensor([1.5, 0.5]))

    calls = []
    real_grad = torch.autograd.grad

    def spy(outputs, inputs, *a, **kw):
        calls.append(list(inputs))
        return real_grad(outputs, inputs, *a, **kw)

    monkeypatch.setattr(gradnorm_mod.torch.autograd, "grad", spy)
    out = model(x[:32])
    losses = {t: (out[t] - ys[t][:32]).pow(2).mean() for t in tasks}
    gn.combine({t: l for t, l in losses.items()})  # warm-up step: L_i(0)
    assert len(calls) == 2 and all([id(p) for p in c] == [id(p) for p in W] for c in calls)

    out = model(x[32:64])
    losses = {t: (out[t] - ys[t][32:64]).pow(2).mean() for t in tasks}
    total = gn.combine(losses)
    monkeypatch.undo()
    # the network is trained on Σ w_i L_i with w detached
    assert total.grad_fn is not None
    assert total.item() == pytest.approx(1.5 * losses["t0"].item() + 0.5 * losses["t1"].item(), rel=1e-6)
    head_grad = torch.autograd.grad(total, model.heads["t1"].weight, retain_graph=True)[0]
    want = torch.autograd.grad(0.5 * losses["t1"], model.heads["t1"].weight, retain_graph=True)[0]
    assert torch.allclose(head_grad, want)
    # w's gradient equals autograd of L_grad = Σ|w_i n_i − target_i| with target detached
    n = []
    for t in tasks:
        g = torch.autograd.grad(losses[t], W, retain_graph=True)
        n.append(torch.sqrt(sum(gi.pow(2).sum() for gi in g)))
    n = torch.stack(n)
    w = torch.tensor([1.5, 0.5], requires_grad=True)
    G = w * n
    Lt = torch.stack([losses[t].detach() for t in tasks]) / (gn.loss_sum0 / 1)
    r = Lt / Lt.mean()
    target = (G.mean() * r.pow(1.5)).detach()
    (G - target).abs().sum().backward()
    assert torch.allclose(gn.weights.grad, w.grad, rtol=1e-5)
    assert gn.last_norms == pytest.approx(dict(zip(tasks, n.tolist())), rel=1e-5)
    assert gn.param_groups(1e-3) == []  # w is never in the network optimiser


def test_gradnorm_bad_layer_and_missing_task():
    model = TinyMTL(["a", "b"])
    gn = build_weighting("gradnorm", [reg("a"), reg("b")], {"last_shared_layer": "body.9"})
    with pytest.raises(BenchError, match=r"'body\.9'.*valid ones include: .*2"):
        gn.setup(model)
    gn = build_weighting("gradnorm", [reg("a"), reg("b")], {"last_shared_layer": "1"})  # Tanh: no params
    with pytest.raises(BenchError, match="no trainable parameters"):
        gn.setup(model)
    gn = build_weighting("gradnorm", [reg("a"), reg("b")], {"last_shared_layer": "0"})
    gn.setup(model)
    assert gn.shared_layer_name == "0"
    out = model(torch.randn(4, 4))
    with pytest.raises(BenchError, match=r"\['b'\] are missing"):
        gn.combine({"a": out["a"].pow(2).mean()})
    with pytest.raises(BenchError, match="alpha"):
        build_weighting("gradnorm", [reg("a")], {"alpha": -1})
    assert GradNorm.needs_all_tasks and not Uncertainty.needs_all_tasks
