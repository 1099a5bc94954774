"""Defining properties of the learned weightings (uncertainty, GradNorm) on problems with a known answer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.utils.parametrize
from torch import nn

from bench.config import TaskConfig
from bench.errors import BenchError
from bench.weighting import build_weighting
from bench.weighting import gradnorm as gradnorm_mod
from bench.weighting.base import Step
from bench.weighting.gradnorm import GradNorm, GradNormParams
from bench.weighting.uncertainty import DEFAULT_LR, Uncertainty, UncertaintyParams

pytestmark = pytest.mark.usefixtures("one_thread")


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
    assert build_weighting("uncertainty", [reg("a")]).param_groups(lr=1e-3)[0]["lr"] == DEFAULT_LR  # its own
    assert build_weighting("uncertainty", [reg("a")], {"lr": None}).param_groups(lr=1e-3)[0]["lr"] == 1e-3
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
    w = Uncertainty([reg(t) for t in sig2], UncertaintyParams(lr=None))  # s at the network's rate
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
        weighting.backward(losses, Step())
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
        gn.backward(losses, Step())
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

    seen_out = []
    model.backbone[2].register_forward_hook(lambda mod, args, out: seen_out.append(out))
    monkeypatch.setattr(gradnorm_mod.torch.autograd, "grad", spy)
    out = model(x[:32])
    losses = {t: (out[t] - ys[t][:32]).pow(2).mean() for t in tasks}
    gn.learn({t: l for t, l in losses.items()})  # warm-up step: L_i(0)
    # one backward per task, from L_i to W's output z only (∂L_i/∂z): never to W's parameters or below W
    assert len(calls) == 2 and all([id(p) for p in c] == [id(seen_out[0])] for c in calls)
    assert gn.last_norm_paths == ["direct", "direct"]  # R = 32 rows, 16×16: the direct product is cheaper

    out = model(x[32:64])
    losses = {t: (out[t] - ys[t][32:64]).pow(2).mean() for t in tasks}
    gn.learn(losses)
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


def test_gradnorm_bad_layer_and_absent_task():
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
    la = out["a"].pow(2).mean()
    # partial labels: a task with no label in the step is absent from the sum (w is not learned that step)
    assert torch.equal(gn.combine({"a": la}), (gn.weights.detach()[0] * la).reshape(()))
    with pytest.raises(BenchError, match="no task loss"):
        gn.combine({})
    with pytest.raises(BenchError, match="alpha"):
        build_weighting("gradnorm", [reg("a")], {"alpha": -1})
    assert GradNorm.needs_all_tasks and not Uncertainty.needs_all_tasks


# ------------------------------------------------------------------ GradNorm: ‖∇_W L_i‖ without forming ∇_W

def autograd_norms(losses: dict[str, torch.Tensor], params: list[nn.Parameter]) -> dict[str, float]:
    """The reference: the norm of the dense gradient over W's parameters."""
    out = {}
    for t, l in losses.items():
        g = torch.autograd.grad(l, params, retain_graph=True, allow_unused=True)
        out[t] = math.sqrt(sum(float(gi.double().pow(2).sum()) for gi in g if gi is not None))
    return out


class SeqMTL(nn.Module):
    """W sees (B, L, hidden) like a transformer's ``output.dense``; heads mean-pool over L."""

    def __init__(self, tasks: list[str], d_in: int = 6, hidden: int = 12, bias: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden, bias=bias),
                                      nn.LayerNorm(hidden))
        self.backbone.shared_layer = "2"
        self.heads = nn.ModuleDict({t: nn.Linear(hidden, 1) for t in tasks})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.backbone(x).mean(1)
        return {t: head(h).squeeze(-1) for t, head in self.heads.items()}


@pytest.mark.parametrize("method", ["gram", "direct"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_grad_sqnorms_gram_and_direct_equal_dense_gradient(method, bias):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 5, generator=g)
    deltas = [torch.randn(7, 3, generator=g) for _ in range(4)]
    got, how = gradnorm_mod.linear_grad_sqnorms(h, deltas, bias=bias, method=method)
    want = torch.stack([(d.T @ h).pow(2).sum() + (d.sum(0).pow(2).sum() if bias else 0) for d in deltas])
    assert how == method and torch.allclose(got, want, rtol=1e-5)
    only_bias, _ = gradnorm_mod.linear_grad_sqnorms(h, deltas, weight=False, method=method)
    assert torch.allclose(only_bias, torch.stack([d.sum(0).pow(2).sum() for d in deltas]), rtol=1e-5)
    # cost model: few rows and a wide layer → Gram; many rows (B·L) and a narrow layer → direct
    assert gradnorm_mod.linear_grad_sqnorms(torch.randn(8, 64), [torch.randn(8, 64)] * 2)[1] == "gram"
    assert gradnorm_mod.linear_grad_sqnorms(torch.randn(256, 8), [torch.randn(256, 8)] * 2)[1] == "direct"


@pytest.mark.parametrize("batch,hidden,path", [(8, 64, "gram"), (64, 8, "direct")])
def test_gradnorm_fast_norms_equal_autograd_single_input(batch, hidden, path):
    """One batch, every head on it: the norms equal those of autograd.grad over W's parameters, on both paths, and
    the Gram of W's input is shared by all tasks."""
    tasks = ["a", "b", "c"]
    model = TinyMTL(tasks, d_in=5, hidden=hidden)
    gn = GradNorm([reg(t) for t in tasks], GradNormParams(warmup_steps=1))
    ref = GradNorm([reg(t) for t in tasks], GradNormParams(warmup_steps=1, fast_norm=False))
    gn.setup(model)
    ref.setup(model)
    x = torch.randn(batch, 5)
    out = model(x)
    losses = {t: (out[t] - i).pow(2).mean() * (i + 1) for i, t in enumerate(tasks)}
    gn.learn(losses)
    ref.learn(losses)
    assert gn.last_norm_paths == [path] * 3 and ref.last_norm_paths == ["autograd"] * 3
    want = autograd_norms(losses, list(model.backbone[2].parameters()))
    assert gn.last_norms == pytest.approx(want, rel=1e-5)
    assert ref.last_norms == pytest.approx(want, rel=1e-5)
    assert gn._captures == [] and ref._captures == []  # nothing kept past the step


def test_gradnorm_fast_norms_equal_autograd_multi_input():
    """One forward per task batch (different sizes), as the engine's multi-input ``all`` step does; one task's loss
    also uses a second batch (W applied twice): each loss is matched to the rows of the forwards it reaches."""
    tasks = ["a", "b", "c"]
    model = TinyMTL(tasks, d_in=5, hidden=32)
    gn = GradNorm([reg(t) for t in tasks], GradNormParams(warmup_steps=1))
    gn.setup(model)
    g = torch.Generator().manual_seed(1)
    xs = {"a": torch.randn(6, 5, generator=g), "b": torch.randn(9, 5, generator=g), "c": torch.randn(4, 5, generator=g)}
    losses = {t: (model(x)[t] - 1).pow(2).mean() for t, x in xs.items()}
    extra = torch.randn(3, 5, generator=g)
    losses["c"] = losses["c"] + model(extra)["c"].pow(2).mean()
    assert len(gn._captures) == 4
    with torch.no_grad():
        model(torch.randn(2, 5))  # an evaluation forward in between is not captured
    assert len(gn._captures) == 4
    gn.learn(losses)
    assert gn.last_norm_paths == ["gram"] * 3
    want = autograd_norms(losses, list(model.backbone[2].parameters()))
    assert gn.last_norms == pytest.approx(want, rel=1e-5)
    # and through two steps of the real engine: multi-input MLP, fast and reference GradNorm give the same norms
    from bench.backbones.simple import MLP, ArrayPreprocessor
    from bench.config import TrainConfig
    from bench.encode import EncodedSplit
    from bench.engine import Trainer
    from bench.model import MultiTaskModel

    tcs = [cls(t) for t in tasks]
    pre = ArrayPreprocessor("t")
    rng = torch.Generator().manual_seed(2)

    def split(n):
        return EncodedSplit(pre.encode(torch.randn(n, 5, generator=rng).numpy()),
                            {t: torch.randint(0, 3, (n,), generator=rng) for t in tasks}, None)

    data = {t: {"train": split(40), "validation": split(8)} for t in tasks}
    norms = []
    for fast in (True, False):
        torch.manual_seed(0)
        w = GradNorm(tcs, GradNormParams(warmup_steps=1, fast_norm=fast))
        tr = Trainer(MultiTaskModel(MLP(5, 32, 2), tcs), tcs, data, w,
                     TrainConfig(epochs=1, batch_size=8, device="cpu", log_every=10**6), 0, pre.collate, False)
        tr.prepare()
        tr.step()
        tr.step()
        assert w.last_norm_paths == (["gram"] * 3 if fast else ["autograd"] * 3)
        norms.append((w.last_norms, w.current()))
    assert norms[0][0] == pytest.approx(norms[1][0], rel=1e-4)
    assert norms[0][1] == pytest.approx(norms[1][1], rel=1e-4)


@pytest.mark.parametrize("batch,seq,path", [(2, 3, "gram"), (4, 16, "direct")])
@pytest.mark.parametrize("bias", [True, False])
def test_gradnorm_fast_norms_with_sequence_dims(batch, seq, path, bias):
    """W's input is (B, L, in): rows are B·L; the Gram (B·L)² loses to the direct product when B·L is large."""
    tasks = ["a", "b"]
    model = SeqMTL(tasks, bias=bias)
    gn = GradNorm([reg(t) for t in tasks], GradNormParams(warmup_steps=1))
    gn.setup(model)
    out = model(torch.randn(batch, seq, 6))
    losses = {"a": (out["a"] - 1).pow(2).mean(), "b": out["b"].pow(2).mean() * 50}
    gn.learn(losses)
    assert gn.last_norm_paths == [path, path]
    assert gn.last_norms == pytest.approx(autograd_norms(losses, list(model.backbone[2].parameters())), rel=1e-5)


def test_gradnorm_falls_back_to_autograd_when_W_is_not_a_plain_linear():
    """A Conv, a block of several layers, a parametrised Linear → autograd.grad; a Linear with a frozen weight stays
    fast (bias term only). Every case gives the norm of the dense gradient over W's trainable parameters."""
    tasks = ["a", "b"]

    class ConvMTL(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.backbone = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(),
                                          nn.Sequential(nn.Linear(18, 6), nn.Tanh(), nn.Linear(6, 4)), nn.Linear(4, 4))
            self.heads = nn.ModuleDict({t: nn.Linear(4, 1) for t in tasks})

        def forward(self, x):
            h = self.backbone(x)
            return {t: hd(h).squeeze(-1) for t, hd in self.heads.items()}

    def check(model, layer, path):
        gn = GradNorm([reg(t) for t in tasks], GradNormParams(warmup_steps=1, last_shared_layer=layer))
        gn.setup(model)
        out = model(torch.randn(5, 2, 8))
        losses = {"a": (out["a"] - 2).pow(2).mean(), "b": out["b"].pow(2).mean()}
        gn.learn(losses)
        assert gn.last_norm_paths == [path, path], layer
        W = model.backbone.get_submodule(layer)
        want = autograd_norms(losses, [p for p in W.parameters() if p.requires_grad])
        assert gn.last_norms == pytest.approx(want, rel=1e-5), layer

    check(ConvMTL(), "0", "autograd")
    check(ConvMTL(), "3", "autograd")  # a block holding two Linears
    check(ConvMTL(), "4", "direct")
    model = ConvMTL()
    model.backbone[4].weight.requires_grad_(False)
    check(model, "4", "direct")
    model = ConvMTL()
    torch.nn.utils.parametrize.register_parametrization(model.backbone[4], "weight", nn.Tanh())
    check(model, "4", "autograd")


def test_gradnorm_fast_path_falls_back_when_the_hook_saw_nothing():
    """No captured forward (e.g. the layer ran under torch.compile without hooks) → autograd.grad, same numbers."""
    tasks = ["a", "b"]
    model = TinyMTL(tasks, hidden=8)
    gn = GradNorm([reg(t) for t in tasks], GradNormParams(warmup_steps=1))
    gn.setup(model)
    out = model(torch.randn(16, 4))
    gn._captures.clear()
    losses = {t: out[t].pow(2).mean() for t in tasks}
    gn.learn(losses)
    assert gn.last_norm_paths == ["autograd"] * 2
    assert gn.last_norms == pytest.approx(autograd_norms(losses, list(model.backbone[2].parameters())), rel=1e-5)
    # setup() twice (a new model): one hook only, on the new model's layer
    model2 = TinyMTL(tasks, hidden=8, seed=1)
    gn.setup(model2)
    model(torch.randn(2, 4))
    assert gn._captures == []
    model2(torch.randn(2, 4))
    assert len(gn._captures) == 1


@pytest.mark.parametrize("load_before_setup", [False, True])
def test_gradnorm_state_dict_round_trips_w_optimizer_state(load_before_setup, tmp_path):
    """Resuming after a kill: w, L_i(0), steps_seen and w's Adam moments come back, so the next steps are identical."""
    x, ys = scaled_problem(scales=(1.0, 20.0, 5.0))
    tasks = [reg(t) for t in ys]
    gn = GradNorm(tasks, GradNormParams(warmup_steps=2, lr=0.05))
    model = TinyMTL(list(ys))
    gn.setup(model)

    def step(w, i):
        out = model(x[i * 16:(i + 1) * 16])
        losses = {t: (out[t] - y[i * 16:(i + 1) * 16]).pow(2).mean() for t, y in ys.items()}
        w.learn(losses)
        w.after_step()

    for i in range(6):
        step(gn, i)
    torch.save(gn.state_dict(), tmp_path / "w.pt")
    sd = torch.load(tmp_path / "w.pt", weights_only=False)
    assert set(sd) == {"weights", "loss_sum0", "_extra_state"}
    assert sd["_extra_state"]["steps_seen"] == 6 and sd["_extra_state"]["optimizer"]["kind"] == "adam"
    gn2 = GradNorm(tasks, GradNormParams(warmup_steps=2, lr=0.05))
    if load_before_setup:
        gn2.load_state_dict(sd)
        assert gn2.state_dict()["_extra_state"]["optimizer"] is not None  # kept until setup() builds the optimiser
        gn2.setup(model)
    else:
        gn2.setup(model)
        gn2.load_state_dict(sd)
    st1, st2 = gn._opt.state_dict()["state"][0], gn2._opt.state_dict()["state"][0]
    assert set(st1) == {"step", "exp_avg", "exp_avg_sq"}
    for k in st1:
        assert torch.equal(torch.as_tensor(st1[k]), torch.as_tensor(st2[k])), k
    assert gn2.steps_seen == 6 and torch.equal(gn2.weights, gn.weights) and torch.equal(gn2.loss_sum0, gn.loss_sum0)
    for i in range(6, 9):
        step(gn, i)
        step(gn2, i)
        assert gn2.current() == gn.current()
    # without the moments (a fresh Adam) the next step differs: the round trip is what makes them equal
    fresh = GradNorm(tasks, GradNormParams(warmup_steps=2, lr=0.05))
    fresh.setup(model)
    fresh.load_state_dict(gn.state_dict() | {"_extra_state": {"steps_seen": 9}})  # an old checkpoint's extra state
    step(gn, 9)
    step(fresh, 9)
    assert fresh.current() != pytest.approx(gn.current(), rel=1e-7, abs=0)
    # an SGD GradNorm ignores Adam state instead of loading options it does not have
    sgd = GradNorm(tasks, GradNormParams(optimizer="sgd"))
    sgd.setup(model)
    sgd.load_state_dict(gn.state_dict())
    assert sgd._opt.state_dict()["state"] == {}
