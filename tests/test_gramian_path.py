"""The Gramian path of ``via=params`` (bench/weighting/gramian.py) against the plain Jacobian path, and ConFIG from
the Gramian (bench/weighting/jd/conflict_free.py) against torchjd's ConFIG.

The path runs from the first step of a balancer set up on a model (``setup`` creates its hooks; a balancer built
by hand and never set up takes the plain path), so each case runs three steps on the same batches with and without
``setup`` and compares the last step's gradients: the shared update and each head's own gradient.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torchjd.aggregation import ConFIG

from bench.backbones.simple import MLP, SmallCNN
from bench.config import TaskConfig
from bench.weighting import Step, build_weighting
from bench.weighting.gramian import GramianTaker
from bench.weighting.jacobian import via_features
from bench.weighting.jd.conflict_free import ConFIGWeighting, GramianConFIG

#: every registered aggregator whose update is a weighting of the Gramian (GradDrop is the one that is not)
GRAMIAN = ["mgda", "pcgrad", "upgrad", "dualproj", "cagrad", "imtl_g", "aligned_mtl", "fairgrad", "gradvac", "config",
           "nash_mtl"]
T, BATCH = 3, 8


def tasks(n: int = T) -> list[TaskConfig]:
    return [TaskConfig(name=f"t{i}", input="vector", target="regression") for i in range(n)]


class Net(nn.Module):
    """The tests' MLP backbone (or a small CNN: convolutions and batch norm take the generic way) and a linear head
    per task."""

    def __init__(self, backbone: str = "mlp", dtype: torch.dtype = torch.float64):
        super().__init__()
        torch.manual_seed(0)
        self.body = MLP(5, 16, 2) if backbone == "mlp" else SmallCNN(1, 2)
        self.heads = nn.ModuleDict({f"t{i}": nn.Linear(self.body.out_dim, 1) for i in range(T)})
        self.to(dtype)
        self.cnn = backbone != "mlp"

    def inputs(self, single: bool, seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        shape = (BATCH, 1, 8, 8) if self.cnn else (BATCH, 5)
        dtype = next(self.parameters()).dtype
        return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(1 if single else T)]

    def step(self, balancer, single: bool, seed: int, world: int = 1) -> None:
        for p in self.parameters():
            p.grad = None
        xs = self.inputs(single, seed)
        feats = [self.body(x) for x in xs]
        target = torch.linspace(-1, 1, BATCH, dtype=feats[0].dtype)
        losses = {t: (h(feats[0 if single else i]).squeeze(1) - target * (i + 1)).pow(2).mean()
                  for i, (t, h) in enumerate(self.heads.items())}
        heads = {t: list(h.parameters()) for t, h in self.heads.items()}
        balancer.backward(losses, Step(shared=self.body.shared_parameters(), heads=heads, features=feats,
                                       forwards=len(xs), world=world))

    def grads(self) -> list[torch.Tensor]:
        return [p.grad.clone() for p in self.parameters()]


def run(name: str, single: bool, gramian: bool, backbone: str = "mlp", dtype=torch.float64, world: int = 1,
        steps: int = 3):
    """The gradients after ``steps`` steps, the balancer, and the model."""
    net = Net(backbone, dtype)
    w = build_weighting(name, tasks(), {"via": "params"})
    if gramian:
        w.setup(net)
    for s in range(steps):
        net.step(w, single, seed=s, world=world)
    return net.grads(), w, net


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest difference of two lists of gradients, relative to the largest entry of the second (a conv's
    bias before batch norm has a gradient of rounding size: relative to itself it would be noise)."""
    scale = max(float(y.abs().max()) for y in b)
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True)) / scale


@pytest.mark.parametrize("single", [True, False], ids=["single_input", "multi_input"])
@pytest.mark.parametrize("name", GRAMIAN)
def test_gramian_path_equals_the_plain_path(name, single):
    plain, _, _ = run(name, single, gramian=False)
    ours, w, _ = run(name, single, gramian=True)
    path = w.__dict__["_gramian"]
    assert path.taker is not None and path.checked and not path.off  # the Gramian path ran the last two steps
    assert all(g.dtype == torch.float64 for g in ours)
    assert max_diff(ours, plain) <= 1e-10


@pytest.mark.integration
@pytest.mark.parametrize("name", ["upgrad", "config"])
def test_gramian_path_on_convolutions_and_batch_norm(name):
    plain, _, _ = run(name, True, gramian=False, backbone="cnn")
    ours, w, _ = run(name, True, gramian=True, backbone="cnn")
    assert not w.__dict__["_gramian"].off
    assert max_diff(ours, plain) <= 1e-10


def test_not_taken_under_data_parallelism():
    """world > 1: the plain Jacobian path (whose rows the coordinator sums over the processes); no hooks."""
    plain, _, _ = run("upgrad", False, gramian=False)
    ours, w, _ = run("upgrad", False, gramian=True, world=2)
    assert not w.__dict__["_gramian"].checked  # the Gramian path never ran
    assert max_diff(ours, plain) == 0.0


def test_not_taken_by_an_aggregator_that_is_not_a_gramian_weighting():
    _, w, _ = run("graddrop", False, gramian=True)
    assert w.__dict__["_gramian"] is None  # no hooks either


def test_a_parameter_used_outside_its_module_turns_the_path_off():
    """A parent reading its child's weight through a functional call (as nn.MultiheadAttention does with
    out_proj) escapes the per-module sum: the check at the first Gramian step sees it and keeps the plain path."""

    class Tied(MLP):
        def forward(self, x):
            h = self.body(x)
            last = self.body[-2]
            return h + torch.nn.functional.linear(h, last.weight)  # the last layer's weight, used a second time

    plain_net, ours_net = Net(), Net()
    plain_net.body.__class__ = ours_net.body.__class__ = Tied
    wp, wo = (build_weighting("upgrad", tasks(), {"via": "params"}) for _ in range(2))
    wo.setup(ours_net)
    for s in range(3):
        plain_net.step(wp, False, s)
        ours_net.step(wo, False, s)
    path = wo.__dict__["_gramian"]
    assert path.off and path.taker is None
    assert max_diff(ours_net.grads(), plain_net.grads()) == 0.0


class LargestTensor(TorchDispatchMode):
    """The bytes of the largest tensor any op returns (forward and backward ops alike)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


@pytest.mark.integration
def test_the_gramian_path_never_forms_the_jacobian():
    """On the plain path the largest tensor of a step is the T × P Jacobian; on the Gramian path it is no larger
    than the largest shared parameter (a block of a Linear's task gradients, or its update)."""
    largest = {}
    for gramian in (False, True):
        net = Net()
        w = build_weighting("upgrad", tasks(), {"via": "params"})
        if gramian:
            w.setup(net)
        for s in range(2):
            net.step(w, False, s)
        with LargestTensor() as mode:
            net.step(w, False, 2)
        largest[gramian] = mode.largest
    P = sum(p.numel() for p in net.body.parameters())
    biggest = max(p.numel() for p in net.body.parameters())
    assert largest[False] == T * P * 8  # float64
    assert largest[True] == biggest * 8


def test_float64_stays_float64_on_both_paths():
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    losses = [(z * i).sum() for i in range(1, 3)]
    assert via_features(losses, ["a", "b"], z, {}).dtype == torch.float64
    half = torch.randn(4, 3, dtype=torch.bfloat16, requires_grad=True)
    assert via_features([half.sum()], ["a"], half, {}).dtype == torch.float32  # fp16/bf16 aggregate in fp32
    net = Net()
    taker = GramianTaker(net)
    x = net.inputs(True, 0)[0]
    G = taker.gramian([h(net.body(x)).sum() for h in net.heads.values()], net.body.shared_parameters())
    assert G.dtype == torch.float64
    ours, _, _ = run("upgrad", True, gramian=True)
    assert all(g.dtype == torch.float64 for g in ours)
    # a preference vector (given as float32 numbers) follows a float64 model, on either path
    for via in ("features", "params"):
        w = build_weighting("aligned_mtl", tasks(), {"via": via, "pref_vector": [1.0, 2.0, 0.5]})
        net = Net()
        w.setup(net)
        for s in range(2):
            net.step(w, True, s)
        assert all(g.dtype == torch.float64 for g in net.grads())


# ------------------------------------------------------------------------------------------------ ConFIG


def _jacobians(dtype):
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        well = torch.randn(4, 40, generator=g, dtype=dtype)
        deficient = well.clone()
        deficient[3] = deficient[0] - 2 * deficient[1]  # rank 3
        zero = well.clone()
        zero[2] = 0
        wide = torch.randn(6, 3, generator=g, dtype=dtype)  # T > d
        yield from (("well", well), ("rank_deficient", deficient), ("zero_row", zero), ("t_over_d", wide))


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-8), (torch.float32, 1e-4)], ids=["f64", "f32"])
def test_config_from_the_gramian_equals_torchjds(dtype, rtol):
    for kind, J in _jacobians(dtype):
        for pref in (None, torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0][:J.shape[0]], dtype=dtype)):
            ours, ref = GramianConFIG(pref)(J), ConFIG(pref)(J)
            assert float((ours - ref).norm() / ref.norm()) <= rtol, (kind, pref)


def test_config_weights_by_hand():
    """Two orthogonal gradients of norms 1 and 2: ConFIG goes along the bisector of the unit gradients, u = (1, 1)/√2,
    with length 1ᵀ J u = 3/√2, so the update is (1.5, 1.5) = 1.5 g₁ + 0.75 g₂."""
    G = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
    assert ConFIGWeighting()(G).tolist() == pytest.approx([1.5, 0.75])
    assert ConFIGWeighting()(torch.zeros(2, 2)).tolist() == [0.0, 0.0]  # no gradient: no update


def test_calls_no_step_consumes_are_bounded():
    """Once the balancer's stage is over its hooks stay on the model: forwards that no Gramian step consumes keep at
    most a few steps' worth of calls (activations), and a step that finds calls dropped takes the plain path."""
    from bench.weighting.gramian import MAX_STEPS

    net = Net()
    taker = GramianTaker(net)
    x = net.inputs(True, 0)[0]
    assert taker.gramian([h(net.body(x)).sum() for h in net.heads.values()], net.body.shared_parameters()) is not None
    per_step = taker.per_step
    for _ in range(10):
        for h in net.heads.values():
            h(net.body(x))
    assert len(taker._calls) <= MAX_STEPS * per_step
    assert taker.gramian([h(net.body(x)).sum() for h in net.heads.values()], net.body.shared_parameters()) is None
