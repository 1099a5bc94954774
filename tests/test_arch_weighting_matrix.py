"""Every weighting and aggregator trains every architecture (docs/architectures.md): a few real engine steps of a
tiny dense model (the cnn backbone's maps, segmentation + depth + normals heads) per pair, through the same Trainer
the stages use. A pair passes when its losses stay finite and the update reaches every part that should learn:
the backbone, each task's head and tower, and the architecture's shared modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.architectures import ARCHITECTURES, build_architecture
from bench.backbones.simple import ArrayPreprocessor, SmallCNN
from bench.config import TaskConfig, TrainConfig
from bench.encode import EncodedSplit
from bench.engine import Trainer
from bench.model import MultiTaskModel
from bench.tasks import task_kind
from bench.weighting import WEIGHTINGS, build_weighting

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

SIDE, N = 16, 24
TASKS = [TaskConfig(name="seg", input="image", target="segmentation", num_classes=3),
         TaskConfig(name="depth", input="image", target="depth"),
         TaskConfig(name="normals", input="image", target="normals")]
PARAMS = {"static": {"weights": [1.0, 0.5, 2.0]}}


def _data() -> dict[str, dict[str, EncodedSplit]]:
    rng = np.random.default_rng(0)
    pre = ArrayPreprocessor("bench", image=True)

    def split(n: int) -> EncodedSplit:
        x = rng.integers(0, 256, (n, 3, SIDE, SIDE), dtype=np.uint8)
        seg = rng.integers(-1, 3, (n, SIDE, SIDE))
        depth = rng.uniform(0.5, 4.0, (n, SIDE, SIDE)).astype(np.float32)
        depth[:, 0] = 0.0  # an invalid row
        normals = rng.standard_normal((n, 3, SIDE, SIDE)).astype(np.float32)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        targets = {"seg": torch.as_tensor(seg), "depth": torch.as_tensor(depth), "normals": torch.as_tensor(normals)}
        return EncodedSplit(pre.encode(x), targets, None)

    shared = {"train": split(N), "validation": split(8)}
    return {t.name: shared for t in TASKS}, pre


DATA, PRE = _data()


def _trainer(arch: str, weighting: str, via: str | None = None) -> Trainer:
    torch.manual_seed(0)
    backbone = SmallCNN(3, 4)
    kinds = {t.name: task_kind(t) for t in TASKS}
    module = build_architecture(arch, {}, backbone.view_shapes(), kinds)
    model = MultiTaskModel(backbone, TASKS, architecture=module)
    params = {**PARAMS.get(weighting, {}), **({"via": via} if via else {})}
    w = build_weighting(weighting, TASKS, params)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2, log_every=1, num_workers=0)
    return Trainer(model, TASKS, DATA, w, cfg, 0, PRE.collate, True)


def _steps(tr: Trainer, n: int = 2) -> dict[str, torch.Tensor]:
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    tr.prepare()
    try:
        for _ in range(n):
            tr.step()
    finally:
        tr.close()
    return before


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES.names()))
@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS.names()))
def test_every_weighting_trains_every_architecture(arch, weighting):
    tr = _trainer(arch, weighting)
    before = _steps(tr, 3 if weighting == "gradnorm" else 2)  # gradnorm learns its weights after its first steps
    losses = [v for t in tr.state.traj.loss.values() for v in t[1:]]  # the first point is the start: no loss yet
    assert losses and np.isfinite(losses).all()
    after = dict(tr.model.named_parameters())
    moved = {k for k, v in after.items() if not torch.equal(v.detach(), before[k])}
    parts = {"backbone": [k for k in after if k.startswith("backbone.")],
             **{f"head {t.name}": [k for k in after if k.startswith(f"heads.{t.name}.")] for t in TASKS}}
    if tr.model.architecture is not None:
        parts.update({f"tower {t.name}": [k for k in after if k.startswith(f"arch.towers.{t.name}.")]
                      for t in TASKS})
        parts["arch shared"] = [k for k in after if k.startswith("arch.") and not k.startswith("arch.towers.")]
    unmoved = [part for part, names in parts.items() if names and not moved.intersection(names)]
    assert unmoved == [], f"{arch} x {weighting}: no update reached {unmoved}"


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES.names()))
@pytest.mark.parametrize("weighting", ["pcgrad", "mgda", "upgrad"])
def test_gradient_methods_via_params_train_every_architecture(arch, weighting):
    tr = _trainer(arch, weighting, via="params")
    before = _steps(tr)
    assert tr.w.via_for(1) == "params"
    backbone = [k for k, v in tr.model.named_parameters() if k.startswith("backbone.")
                and not torch.equal(v.detach(), before[k])]
    assert backbone
