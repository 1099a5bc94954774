"""The seams dense kinds and architectures stand on: the backbones' maps view, via=features over a tuple of maps,
and checkpoints that carry an architecture (saved, rebuilt, refused by fusion, keyed only when not hps)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bench import checkpoint as C
from bench.architectures import Architecture, register_architecture
from bench.backbones import build_backbone
from bench.backbones.base import FeatureMaps
from bench.config import BackboneConfig
from bench.errors import BenchError
from bench.plan import build_suite
from bench.stages import Stages, SuiteContext
from bench.stages.context import Checkpoint
from bench.stages.models import build_model
from bench.store import Store
from bench.weighting import jacobian


@pytest.mark.parametrize("source,name", [("cnn", ""), ("timm", "efficientnet_lite0")])
def test_maps_come_from_the_same_pass_as_the_pooled_vector(source, name):
    cfg = BackboneConfig(source=source, name=name, image_size=64, pretrained=False)
    backbone, _ = build_backbone(cfg, "image", np.zeros((2, 3, 40, 40), np.uint8))
    backbone.eval()
    x = torch.rand(2, 3, 40, 40)  # not the working size: the timm encoder resizes, the maps keep the input's size
    views = backbone.features(x)
    assert torch.equal(views["pooled"], backbone(x))
    maps = views["maps"]
    assert isinstance(maps, FeatureMaps) and maps.size == (40, 40)
    side = 64 if source == "timm" else 40
    assert [m.shape[1] for m in maps.maps] == list(backbone.map_channels)
    assert [side // m.shape[-1] for m in maps.maps] == list(backbone.map_strides)
    assert backbone.view_shapes()["maps"].channels == backbone.map_channels


def test_timm_options_keep_size_and_create():
    cfg = BackboneConfig(source="timm", name="efficientnet_lite0", image_size=32, pretrained=False,
                         options={"keep_size": True})
    backbone, _ = build_backbone(cfg, "image", np.zeros((1, 3, 24, 40), np.uint8))
    assert backbone.features(torch.rand(1, 3, 24, 40))["maps"].maps[0].shape[-2:] == (12, 20)  # stride 2, not 32x32
    bad = BackboneConfig(source="timm", name="efficientnet_lite0", pretrained=False, options={"create": 8})
    with pytest.raises(BenchError, match=r"options.create=8 must be a mapping .*output_stride"):
        build_backbone(bad, "image", np.zeros((1, 3, 8, 8), np.uint8))


def test_via_features_over_a_tuple_is_the_jacobian_of_the_concatenation():
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    a, b = w[:2] * 2.0, w[1:] ** 2  # two "maps" computed from the shared w
    ha, hb = torch.ones((), requires_grad=True), torch.ones((), requires_grad=True)
    losses = [ha * (a.sum() + b[0]), hb * (a[0] * b).sum()]
    J = jacobian.via_features(losses, ["p", "q"], (a, b), {"p": [ha], "q": [hb]})
    expected = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, [a, b], retain_graph=True)])
                            for li in losses])
    assert torch.equal(J, expected)
    d = torch.tensor([1.0, -1.0, 0.5, 2.0])  # an update for (a, b), written back through w
    jacobian.write_features(d, (a, b))
    ref = torch.autograd.grad([w[:2] * 2.0, w[1:] ** 2], [w], [d[:2], d[2:]])[0]
    assert torch.allclose(w.grad, ref)


@register_architecture("test_gated")
class Gated(Architecture):
    """A shared scale on the pooled vector, then one gate per task (a test architecture)."""

    def __init__(self, shapes, kinds, params):
        super().__init__(shapes, kinds, params)
        self.scale = nn.Parameter(torch.ones(shapes["pooled"].dim))
        self.towers = nn.ModuleDict({t: nn.Linear(shapes["pooled"].dim, shapes["pooled"].dim) for t in kinds})

    def forward(self, views: dict[str, Any], tasks: list[str]):
        z = views["pooled"] * self.scale
        return {t: self.towers[t](z) for t in tasks}, z


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    suite = build_suite({"suite": "synthetic", "tasks": ["clean", "cls3"], "train.epochs": 1,
                         "train.max_train_samples": 64, "train.max_eval_samples": 32})
    store = Store(tmp_path_factory.mktemp("seam"), suite.name)
    return Stages(SuiteContext.load(suite, store), store, seed=0)


def test_hard_sharing_keeps_its_keys_and_an_architecture_is_saved_and_rebuilt(stages, tmp_path):
    tasks = stages.task_names
    plain = build_model(stages.ctx, tasks, None, 0)
    assert plain.architecture is None and not any(k.startswith("arch.") for k in plain.state_dict())
    model = build_model(stages.ctx, tasks, None, 0, architecture=("test_gated", {}))
    assert {id(p) for p in model.task_parameters(tasks[0])} >= {id(p) for p in model.architecture.towers[tasks[0]]
                                                                .parameters()}
    assert any(p is model.architecture.scale for p in model.shared_parameters())
    with torch.no_grad():
        model.architecture.scale.mul_(3.0)
    C.save_model(model, tmp_path)
    assert C.arch_spec(tmp_path) == {"name": "test_gated", "params": {}}
    back = build_model(stages.ctx, tasks, Checkpoint("joint", "k", tmp_path, tuple(tasks)), 1)
    assert back.architecture is not None
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_joint_stage_with_an_architecture_has_its_own_key_and_fusion_refuses_it(stages):
    plain = stages.joint()
    gated = stages.joint(architecture="test_gated")
    assert plain.ckpt.key != gated.ckpt.key and C.arch_spec(gated.ckpt.path)["name"] == "test_gated"
    assert C.arch_spec(plain.ckpt.path) is None
    assert set(stages.evaluate(gated.ckpt).info["metrics"]) == {"validation", "test"}
    with pytest.raises(BenchError, match="trained with architecture 'test_gated'; fuse the fine-tunes"):
        stages.fuse([gated.ckpt, plain.ckpt], "mean")


def test_a_tasks_head_options_reach_its_decoder_and_an_empty_head_hashes_as_before():
    from bench.backbones.base import ViewShape
    from bench.config import TaskConfig
    from bench.tasks import task_kind

    plain = TaskConfig(name="d", input="image", target="depth")
    assert "head" not in plain.model_dump(mode="json")  # cells of suites without head options keep their hashes
    shape = ViewShape(8, (4, 8), (1, 2))
    aspp = TaskConfig(name="d", input="image", target="depth", head={"decoder": "aspp", "width": 8, "bias": 5.0})
    head = task_kind(aspp).build_head(shape)
    assert type(head).__name__ == "DeepLabHead" and float(head.output.bias) == 5.0
    assert aspp.model_dump(mode="json")["head"] == {"decoder": "aspp", "width": 8, "bias": 5.0}
    with pytest.raises(BenchError, match=r"task 'd': head option 'decoder'.*options are decoder \(fpn\|aspp\)"):
        task_kind(TaskConfig(name="d", input="image", target="depth", head={"decoder": "unet"})).build_head(shape)


def test_the_models_z_over_maps_is_a_cut_of_the_graph():
    """Backpropagating each task's gradient at z gives its gradient over the backbone: the maps each head reads are
    taps, not the maps the next stage reads too (which would count the deeper stages twice)."""
    from bench.backbones.simple import SmallCNN
    from bench.config import TaskConfig
    from bench.model import MultiTaskModel

    torch.manual_seed(0)
    tasks = [TaskConfig(name="seg", input="image", target="segmentation", num_classes=3),
             TaskConfig(name="depth", input="image", target="depth")]
    model = MultiTaskModel(SmallCNN(3, 4), tasks)
    x = torch.rand(2, 3, 12, 12)
    targets = {"seg": torch.randint(0, 3, (2, 12, 12)), "depth": torch.rand(2, 12, 12) + 0.5}
    params = list(model.backbone.parameters())
    for t in ("seg", "depth"):
        out, z = model({"x": x}, ["seg", "depth"], features=True)
        loss = model.kinds[t].loss(out[t], targets[t])
        direct = torch.autograd.grad(loss, params, retain_graph=True)
        at_z = torch.autograd.grad(loss, list(z), retain_graph=True)
        through = torch.autograd.grad(list(z), params, grad_outputs=at_z)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(direct, through))


def test_a_timm_name_may_carry_its_weight_tag():
    cfg = BackboneConfig(source="timm", name="resnet18.tv_in1k", pretrained=False, image_size=32)
    backbone, _ = build_backbone(cfg, "image", np.zeros((1, 3, 32, 32), np.uint8))
    assert backbone.map_channels == (64, 64, 128, 256, 512)
    with pytest.raises(BenchError, match=r"unknown timm model 'resnet18x.tv_in1k'"):
        build_backbone(cfg.model_copy(update={"name": "resnet18x.tv_in1k"}), "image", np.zeros((1, 3, 8, 8), np.uint8))


@pytest.mark.integration
def test_params_deployed_count_the_architectures_modules(tmp_path):
    """A row trained with an architecture deploys its shared modules and its tasks' towers beside trunk and heads,
    so an architecture that adds parameters cannot look as small as hard sharing in the table."""
    from bench.cli import main
    from bench.report import build_leaderboards

    base = ["run", "suite=synthetic", "train.epochs=1", "train.max_train_samples=100", "report=false",
            f"results_dir={tmp_path}", "strategy=naive_mtl"]
    assert main([*base, "strategy.architecture=hps,mmoe"]) == 0
    t = build_leaderboards(tmp_path, "synthetic")[0][0].table
    hps, mmoe = (t.loc[f"naive_mtl[architecture={a}]"] for a in ("hps", "mmoe"))
    assert mmoe["deployed_params"] == mmoe["trainable_params"] > hps["deployed_params"] == hps["trainable_params"]
