"""Architectures (bench/architectures/): every built-in one on pooled vectors, on feature maps and on both at once.

For each: the view each head reads has the shape ``view_shape`` says; ``z`` is a true cut (a task's gradient of the
shared parameters is its gradient of z backpropagated from z); a task's tower gets no gradient from another task's
loss; shared and per-task parameters partition the module; and the property that defines it holds (MTAN with masks
of 1 is hard sharing, cross-stitch with identity units is independent columns, MMoE with one expert is a shared
bottom, CGC without shared experts is per-task experts). The views come from a real backbone (the ``cnn`` one),
whose maps are nested (a stage is computed from the one before), as every backbone's are.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.architectures import ARCHITECTURES, Architecture
from bench.architectures.blocks import tap
from bench.backbones.base import FeatureMaps, ViewShape
from bench.backbones.simple import MLP, SmallCNN
from bench.cli import main
from bench.config import TaskConfig
from bench.errors import BenchError
from bench.specs import ArchitectureSpec
from bench.strategy import STRATEGIES
from bench.tasks import task_kind
from tests.conftest import records
from tests.test_plugin_docs import example

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["mtan", "cross_stitch", "mmoe", "cgc"]
# task -> the view its head reads, per layout: pooled heads only, map heads only, both in one model
LAYOUTS = {"pooled": {"a": "pooled", "b": "pooled", "c": "pooled"},
           "maps": {"a": "maps", "b": "maps"},
           "mixed": {"a": "pooled", "b": "maps", "c": "maps"}}


class MapsHead(nn.Module):
    """A dense head for the tests: a 1x1 conv per map, upsampled to the input size and summed (one output channel)."""

    def __init__(self, shape: ViewShape):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in shape.channels)

    def forward(self, maps: FeatureMaps) -> torch.Tensor:
        return sum(F.interpolate(conv(m), size=maps.size, mode="bilinear", align_corners=False)
                   for conv, m in zip(self.convs, maps.maps, strict=True))


def kinds_of(layout: str) -> dict:
    """Real classification kinds for pooled heads; for map heads what an architecture reads of a kind (``reads``)."""
    out = {}
    for t, v in LAYOUTS[layout].items():
        out[t] = task_kind(TaskConfig(name=t, input="image", target="classification", num_classes=3)) \
            if v == "pooled" else SimpleNamespace(reads="maps")
    return out


def build(name: str, layout: str, seed: int = 0, **params) -> tuple[SmallCNN, Architecture, nn.ModuleDict]:
    torch.manual_seed(seed)
    backbone = SmallCNN(1, 2)  # maps of 2, 4, 8 channels at strides 1, 2, 4; pooled 8
    kinds = kinds_of(layout)
    cls = ARCHITECTURES.get(name)
    arch = cls(backbone.view_shapes(), kinds, cls.Params(**params))
    heads = nn.ModuleDict({t: MapsHead(arch.view_shape(t)) if kinds[t].reads == "maps"
                           else kinds[t].build_head(arch.view_shape(t)) for t in kinds})
    return backbone, arch, heads


def run(backbone, arch, heads, tasks=None, seed: int = 1):
    """Outputs, z and each task's loss on one batch of 3 images of 8x8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 8, 8, generator=g)
    tasks = tasks or list(heads)
    views = backbone.features(x)
    per_task, z = arch(views, tasks)
    out = {t: heads[t](per_task[t]) for t in tasks}
    losses = {t: ((o - torch.randn(o.shape, generator=g)) ** 2).mean() for t, o in out.items()}
    return per_task, z, losses


def shared_of(backbone, arch) -> list[nn.Parameter]:
    return [*backbone.parameters(), *arch.shared_parameters()]


def grads(outputs, inputs, grad_outputs=None) -> list[torch.Tensor]:
    gs = torch.autograd.grad(outputs, inputs, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for i, g in zip(inputs, gs)]


CASES = [(n, layout) for n in NAMES for layout in LAYOUTS]


@pytest.mark.parametrize("name, layout", CASES)
def test_each_head_reads_a_view_of_the_shape_view_shape_says(name, layout):
    backbone, arch, heads = build(name, layout)
    per_task, _, _ = run(backbone, arch, heads)
    maps = backbone.features(torch.zeros(3, 1, 8, 8))["maps"]
    for t, view in per_task.items():
        shape = arch.view_shape(t)
        if LAYOUTS[layout][t] == "maps":
            assert [m.shape for m in view.maps] == [m.shape for m in maps.maps]  # the backbone's maps' shapes
            assert shape.channels == (2, 4, 8) and view.size == (8, 8)
        else:
            assert view.shape == (3, shape.dim)


@pytest.mark.parametrize("name, layout", CASES)
def test_z_is_a_cut_every_shared_gradient_passes_through_it(name, layout):
    backbone, arch, heads = build(name, layout)
    _, z, losses = run(backbone, arch, heads)
    assert isinstance(z, tuple) and z
    shared = shared_of(backbone, arch)
    for t, loss in losses.items():
        direct = grads(loss, shared)
        dz = grads(loss, list(z))
        through_z = grads(list(z), shared, grad_outputs=dz)
        for p, a, b in zip(shared, direct, through_z):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=f"{name}/{layout}: task {t}, {p.shape}")
        assert any(d.abs().sum() > 0 for d in direct)  # the test is not vacuous


def test_the_backbone_maps_are_no_cut_but_taps_of_them_are():
    """Why z is made of taps: a backbone map that the next stage also reads counts the deeper stages twice."""
    torch.manual_seed(0)
    backbone = SmallCNN(1, 2)
    head = MapsHead(ViewShape(8, (2, 4, 8), (1, 2, 4)))
    x = torch.randn(3, 1, 8, 8)
    params = list(backbone.parameters())
    for use_tap, ok in [(False, False), (True, True)]:
        maps = backbone.features(x)["maps"]
        view = tap(maps) if use_tap else maps
        loss = head(view).pow(2).mean()
        direct = grads(loss, params)
        z = list(view.maps)
        through = grads(z, params, grad_outputs=grads(loss, z))
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(direct, through)) is ok


@pytest.mark.parametrize("name, layout", CASES)
def test_a_tower_gets_no_gradient_from_another_tasks_loss(name, layout):
    backbone, arch, heads = build(name, layout)
    _, _, losses = run(backbone, arch, heads)
    for t in losses:
        own = arch.task_parameters(t)
        assert own, f"{name}: task {t} has no tower"
        assert any(g.abs().sum() > 0 for g in grads(losses[t], own))
        for u in losses:
            if u != t:
                assert all(g.abs().sum() == 0 for g in grads(losses[u], own)), f"{name}: {u}'s loss reaches {t}"


@pytest.mark.parametrize("name, layout", CASES)
def test_shared_and_per_task_parameters_partition_the_module(name, layout):
    _, arch, _ = build(name, layout)
    groups = [arch.shared_parameters(), *(arch.task_parameters(t) for t in LAYOUTS[layout])]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))  # disjoint
    assert set(ids) == {id(p) for p in arch.parameters()}  # and complete


@pytest.mark.parametrize("name", NAMES)
def test_a_subset_of_tasks_runs_only_their_towers(name):
    """A multi-input step carries one task: the others' towers are not run and get no gradient."""
    backbone, arch, heads = build(name, "mixed")
    per_task, _, losses = run(backbone, arch, heads, tasks=["b"])
    assert set(per_task) == {"b"}
    losses["b"].backward()
    assert all(p.grad is None for t in ("a", "c") for p in arch.task_parameters(t))


# ------------------------------------------------------------------------------------------ defining properties


class Ones(nn.Module):
    """An attention mask forced to 1."""

    def __init__(self, channels: int | None = None):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is None:
            return torch.ones_like(x)
        return x.new_ones(x.shape[0], self.channels, *x.shape[2:])


@pytest.mark.parametrize("layout", ["pooled", "maps"])
def test_mtan_with_masks_of_one_is_hard_sharing(layout):
    backbone, arch, heads = build("mtan", layout)
    for t in LAYOUTS[layout]:
        tower = arch.towers[t]
        if layout == "maps":
            tower.g = nn.ModuleList(Ones(c) for c in (2, 4, 8))
        else:
            tower.g = Ones()
    x = torch.randn(3, 1, 8, 8)
    views = backbone.features(x)
    per_task, _ = arch(views, list(LAYOUTS[layout]))
    for view in per_task.values():
        if layout == "maps":
            for a, b in zip(view.maps, views["maps"].maps, strict=True):
                torch.testing.assert_close(a, b)
        else:
            torch.testing.assert_close(view, views["pooled"])


def test_mtan_with_the_originals_shared_f_has_no_cut_and_counts_f_as_shared():
    _, arch, _ = build("mtan", "maps", shared_f=True)
    f = {id(p) for p in arch.f.parameters()}
    assert f and f <= {id(p) for p in arch.shared_parameters()}
    assert not f & {id(p) for t in ("a", "b") for p in arch.task_parameters(t)}
    backbone, arch, heads = build("mtan", "maps", shared_f=True)
    assert run(backbone, arch, heads)[1] is None
    _, own, _ = build("mtan", "maps")
    # per-task f: each task pays for its own 3x3 convs (2->4 and 4->8 channels, with BN): the cost of the cut
    per_task = sum(p.numel() for p in own.towers["a"].f.parameters())
    assert per_task == (9 * 2 * 4 + 4 + 2 * 4) + (9 * 4 * 8 + 8 + 2 * 8)


@pytest.mark.parametrize("layout", ["pooled", "maps"])
def test_cross_stitch_with_identity_units_is_independent_columns(layout):
    backbone, arch, heads = build("cross_stitch", layout, layers=3)
    tasks = list(LAYOUTS[layout])
    v = LAYOUTS[layout][tasks[0]]
    with torch.no_grad():
        arch.units[v].copy_(torch.eye(len(tasks)).expand_as(arch.units[v]))
        for c, t in enumerate(tasks):
            arch.towers[t].alpha.copy_(torch.eye(len(tasks))[c])
    x = torch.randn(3, 1, 8, 8)
    views = backbone.features(x)
    per_task, _ = arch(views, tasks)
    for c, t in enumerate(tasks):
        h = views[v]
        for layer in arch.columns[v]:
            h = layer[c](h)
        alone = arch.towers[t].last(h)
        got = per_task[t]
        for a, b in zip(got.maps if layout == "maps" else [got], alone.maps if layout == "maps" else [alone]):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layout", ["pooled", "maps"])
def test_mmoe_with_one_expert_is_a_shared_bottom(layout):
    backbone, arch, heads = build("mmoe", layout, experts=1)
    views = backbone.features(torch.randn(3, 1, 8, 8))
    per_task, _ = arch(views, list(LAYOUTS[layout]))
    bottom = arch.experts[layout][0](views[layout])
    for view in per_task.values():
        for a, b in zip(*(([v] if layout == "pooled" else list(v.maps)) for v in (view, bottom))):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layout", ["pooled", "maps"])
def test_cgc_without_shared_experts_is_per_task_experts(layout):
    backbone, arch, heads = build("cgc", layout, shared_experts=0, task_experts=1)
    assert arch.shared_parameters() == []
    views = backbone.features(torch.randn(3, 1, 8, 8))
    per_task, _ = arch(views, list(LAYOUTS[layout]))
    for t, view in per_task.items():
        own = arch.towers[t].experts[0](views[layout])
        for a, b in zip(*(([v] if layout == "pooled" else list(v.maps)) for v in (view, own))):
            torch.testing.assert_close(a, b)


def test_tokens_are_mixed_per_token():
    shapes = {"tokens": ViewShape(6)}
    kinds = {"a": SimpleNamespace(reads="tokens"), "b": SimpleNamespace(reads="tokens")}
    x = torch.randn(2, 5, 6)
    for name in NAMES:
        cls = ARCHITECTURES.get(name)
        arch = cls(shapes, kinds, cls.Params())
        per_task, z = arch({"tokens": x}, ["a", "b"])
        assert all(v.shape == (2, 5, arch.view_shape(t).dim) for t, v in per_task.items())


# ------------------------------------------------------------------------------------------ naming and options


def test_unknown_names_and_bad_parameters_are_one_line():
    with pytest.raises(BenchError, match=r"unknown architecture 'mtnn' \(did you mean 'mtan'\?\); valid: cgc, "
                                         r"cross_stitch, hps, mmoe, mtan"):
        ArchitectureSpec.of("mtnn")
    with pytest.raises(BenchError, match="architecture 'mmoe'.*experts") as err:
        ArchitectureSpec.of("mmoe", {"experts": 0})
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="architecture 'hps'"):
        ArchitectureSpec.of("hps", {"experts": 2})
    with pytest.raises(BenchError, match="at least one expert"):
        ArchitectureSpec("cgc", {"shared_experts": 0, "task_experts": 0}).build(
            {"pooled": ViewShape(4)}, {"a": SimpleNamespace(reads="pooled")})
    assert ArchitectureSpec("hps").build({"pooled": ViewShape(4)}, {}) is None


@pytest.mark.parametrize("strategy", ["naive_mtl", "uncertainty", "gradnorm", "fuse_then_joint"])
def test_joint_strategies_take_an_architecture_and_leave_the_default_out_of_records(strategy):
    Params = STRATEGIES.get(strategy).Params
    p = Params(architecture="mtan", architecture_params={"reduction": 2})
    assert p.architecture == "mtan" and p.architecture.resolve().params.reduction == 2
    assert p.model_dump()["architecture"] == "mtan"
    assert "architecture" not in Params().model_dump() and "architecture_params" not in Params().model_dump()


def test_run_refuses_an_unknown_architecture_naming_the_valid_ones(capsys, tmp_path):
    code = main(["run", "suite=synthetic", "strategy=naive_mtl", "strategy.architecture=mtnn",
                 f"results_dir={tmp_path}"])
    assert code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown architecture 'mtnn' (did you mean 'mtan'?); valid: cgc, cross_stitch, hps, mmoe, mtan" in line


# ------------------------------------------------------------------------------------------ end to end

# a dense suite small enough for a test: 32 px ray-cast scenes, segmentation and depth on the cnn backbone's maps
TINY_SCENES = """\
name: tiny_scenes
description: "a test's dense suite: 32 px scenes, segmentation and depth on the cnn backbone's maps"
kind: single_input
backbone: {source: cnn, options: {width: 4}}
data: {source: scenes, options: {n: 120, seed: 0, image_size: 32, max_objects: 2, pictures: 1}}
tasks:
  - {name: segmentation, label: segmentation, input: image, target: segmentation, num_classes: 6}
  - {name: depth, label: depth, input: image, target: depth}
train: {epochs: 1, batch_size: 16, lr: 3.0e-3, max_eval_samples: 24}
split: {seed: 1234, validation: 0.2, test: 0.2}
"""


def _run(args: list[str], results) -> dict[str, dict]:
    code = main(["run", *args, f"results_dir={results}", "report=false"])
    assert code == 0
    return {r["label"]: r for r in records(results)}


@pytest.mark.integration
def test_architectures_train_with_a_gradient_balancer_via_features_and_via_params(results):
    got = _run(["suite=multilabel", "strategy=naive_mtl", "strategy.architecture=mmoe,mtan",
                "strategy.weighting=pcgrad", "strategy.weighting_params.via=features,params", "train.epochs=1",
                "train.max_train_samples=96", "train.max_eval_samples=48"], results)
    assert len(got) == 4
    for label, record in got.items():
        assert record["params"]["architecture"] in label and record["params"]["weighting"] == "pcgrad"
        for metrics in record["rows"]["naive_mtl"]["metrics"]["test"].values():
            assert all(v == v for v in metrics.values())  # finite, not NaN


@pytest.mark.integration  # needs the dense kinds (segmentation, depth)
def test_every_joint_strategy_trains_an_architecture_on_dense_maps(results, tmp_path, monkeypatch):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "tiny_scenes.yaml").write_text(TINY_SCENES)
    monkeypatch.chdir(tmp_path)
    got = _run(["suite=tiny_scenes", "strategy=naive_mtl", "strategy.architecture=mtan,cross_stitch",
                "strategy.weighting=pcgrad"], results)
    got.update(_run(["suite=tiny_scenes", "strategy=uncertainty,gradnorm,fuse_then_joint",
                     "strategy.architecture=cgc"], results))
    assert sorted((r["strategy"], r["params"]["architecture"]) for r in got.values()) == [
        ("fuse_then_joint", "cgc"), ("gradnorm", "cgc"), ("naive_mtl", "cross_stitch"), ("naive_mtl", "mtan"),
        ("uncertainty", "cgc")]
    for record in got.values():
        for row in record["rows"].values():
            assert set(row["metrics"]["test"]) == {"segmentation", "depth"}


@pytest.mark.integration
def test_the_plugin_page_example_runs_as_written_and_its_z_is_a_cut(tmp_path, monkeypatch, capsys):
    files, commands = example("architectures")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    with ARCHITECTURES.scope():  # the plug-in's registration ends with the test
        for args in commands:
            assert main([*args, f"results_dir={results}", "report=false"]) == 0
        got = {r["label"]: r for r in records(results)}
        assert set(got) == {f"naive_mtl[architecture={a},weighting={w}]"
                            for a in ("hps", "shared_bottom") for w in ("equal", "mgda")}
        assert got["naive_mtl[architecture=shared_bottom,weighting=mgda]"]["params"]["architecture"] == \
            "shared_bottom"
        assert "architecture" not in got["naive_mtl[architecture=hps,weighting=equal]"]["params"]
        capsys.readouterr()
        assert main(["list", "plugin_dirs=[my_plugins]"]) == 0
        section = capsys.readouterr().out.split("\narchitectures", 1)[1]
        line = next(x for x in section.splitlines() if x.split()[:1] == ["shared_bottom"])
        assert "my_plugins" in line and "A shared ReLU layer" in line
        # its z is a cut, as the page says
        torch.manual_seed(0)
        backbone = MLP(5, 8, 1)
        kinds = {t: task_kind(TaskConfig(name=t, input="vector", target="regression")) for t in ("a", "b")}
        cls = ARCHITECTURES.get("shared_bottom")
        arch = cls(backbone.view_shapes(), kinds, cls.Params(width=4))
        heads = {t: kinds[t].build_head(arch.view_shape(t)) for t in kinds}
        per_task, z = arch({"pooled": backbone(torch.randn(6, 5))}, ["a", "b"])
        shared = shared_of(backbone, arch)
        for t in kinds:
            loss = heads[t](per_task[t]).pow(2).mean()
            through = grads([z], shared, grad_outputs=grads(loss, [z]))
            for a, b in zip(grads(loss, shared), through):
                torch.testing.assert_close(b, a)


@pytest.mark.integration
def test_every_weighting_trains_with_every_architecture(results):
    """The architecture × weighting matrix on a single-input suite (gradient balancers take z: via=features)."""
    from bench.weighting import WEIGHTINGS

    weightings = [w for w in WEIGHTINGS.names() if w != "static"]  # static needs its λ vector
    got = _run(["suite=synthetic", "strategy=naive_mtl", f"strategy.architecture={','.join(NAMES)}",
                f"strategy.weighting={','.join(weightings)}", "train.epochs=1", "train.max_train_samples=64",
                "train.max_eval_samples=32"], results)
    assert sorted((r["params"]["architecture"], r["params"]["weighting"]) for r in got.values()) == \
        sorted((a, w) for a in NAMES for w in weightings)
    for record in got.values():
        for metrics in record["rows"]["naive_mtl"]["metrics"]["test"].values():
            assert all(math.isfinite(v) for v in metrics.values()), record["label"]
