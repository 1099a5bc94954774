"""The NYUv2/CityScapes protocol's step schedule (``train.schedule=step``) and train-time scale-crop augmentation
(``train.augment``, bench/augment.py): hand values of the lr and of a crop, seeded draws that a resumed run repeats,
train batches only, and the configurations that use neither dumping (and hashing) as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from bench import augment as A
from bench.backbones.simple import ArrayPreprocessor, SmallCNN
from bench.config import TaskConfig, TrainConfig, explain
from bench.encode import EncodedSplit
from bench.engine import Trainer
from bench.engine import trainer as trainer_module
from bench.errors import BenchError
from bench.model import MultiTaskModel
from bench.tasks import task_kind
from bench.weighting import build_weighting

from .conftest import records, run_cli

SIDE, N = 8, 12
TASKS = [TaskConfig(name="seg", input="image", target="segmentation", num_classes=3),
         TaskConfig(name="depth", input="image", target="depth"),
         TaskConfig(name="normals", input="image", target="normals")]
KINDS = {t.name: task_kind(t) for t in TASKS}

# the dump of a default TrainConfig before the new keys: every cell hash and stage key of an existing suite reads it
BEFORE = {"epochs": 3, "batch_size": 32, "eval_batch_size": 128, "lr": 0.001, "head_lr": None, "weight_decay": 0.0,
          "grad_clip": 1.0, "warmup_ratio": 0.0, "schedule": "constant", "optimizer": "adamw", "dropout": 0.0,
          "max_train_samples": None, "max_eval_samples": None, "sampling": "proportional", "temperature": 2.0,
          "patience": None, "device": "auto", "precision": "fp32", "compile": False, "num_workers": None,
          "log_every": 50}


# -- configuration ---------------------------------------------------------------------------------------------
def test_a_configuration_without_the_new_keys_dumps_as_before():
    assert TrainConfig().model_dump(mode="json") == BEFORE
    linear = TrainConfig(schedule="linear", warmup_ratio=0.1)
    assert set(linear.model_dump()) == set(BEFORE)
    step = TrainConfig(schedule="step", milestones=[100], augment="scale_crop").model_dump()
    assert (step["milestones"], step["gamma"], step["augment"]) == ([100], 0.5, "scale_crop")


def test_only_the_dense_gpu_suites_set_the_new_keys():
    from bench.config import SuiteConfig

    for path in sorted((Path(__file__).resolve().parent.parent / "suites").glob("*.yaml")):
        train = SuiteConfig(**yaml.safe_load(path.read_text())).results_dump()["train"]
        new = {"milestones", "gamma", "augment"} & set(train)
        assert new == ({"milestones", "gamma", "augment"} if path.stem in ("nyuv2", "cityscapes") else set()), path


@pytest.mark.parametrize("kw, line", [
    ({"milestones": [3]}, "train.milestones applies to train.schedule=step only (schedule is 'constant'); set "
                          "train.schedule=step or drop train.milestones"),
    ({"gamma": 0.1}, "train.gamma applies to train.schedule=step only (schedule is 'constant'); set "
                     "train.schedule=step or drop train.gamma"),
    ({"schedule": "step"}, "train.schedule=step needs train.milestones (epochs after which the lr is times "
                           "train.gamma), e.g. train.milestones=[100]"),
    ({"schedule": "step", "milestones": [5, 5]}, "train.milestones=[5, 5]: give positive epochs in increasing "
                                                 "order, e.g. [100]"),
    ({"schedule": "step", "milestones": [0]}, "train.milestones=[0]: give positive epochs in increasing order, "
                                              "e.g. [100]"),
])
def test_bad_step_schedules_are_one_line(kw, line):
    with pytest.raises(ValidationError) as e:
        TrainConfig(**kw)
    assert str(explain(e.value, TrainConfig)) == line


# -- the schedule ----------------------------------------------------------------------------------------------
class _Sched:
    """Just what Trainer._schedule reads: the config, steps per epoch, and an optimiser."""

    def __init__(self, cfg: TrainConfig, per_epoch: int):
        self.cfg, self.steps_per_epoch = cfg, per_epoch
        self.opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)


def lrs(cfg: TrainConfig, per_epoch: int, total: int) -> list[float]:
    holder = _Sched(cfg, per_epoch)
    sched = Trainer._schedule(holder, total)  # type: ignore[arg-type]
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        holder.opt.step()
        sched.step()
    return out


def test_the_step_schedule_halves_the_lr_at_each_milestone_epoch_as_steplr():
    cfg = TrainConfig(lr=1.0, schedule="step", milestones=[2, 3], gamma=0.5)
    got = lrs(cfg, per_epoch=4, total=16)  # epochs 0-1 at 1, epoch 2 at 0.5, epoch 3 at 0.25
    assert got == [1.0] * 8 + [0.5] * 4 + [0.25] * 4
    # the papers' StepLR(step_size=100, gamma=0.5) stepped once per epoch, over 200 epochs
    ref = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 100, 0.5)
    per_epoch = []
    for _ in range(200):
        per_epoch.append(ref.get_last_lr()[0])
        ref.optimizer.step()
        ref.step()
    got = lrs(TrainConfig(lr=1.0, schedule="step", milestones=[100]), per_epoch=3, total=600)
    assert got == [v for v in per_epoch for _ in range(3)]


def test_the_step_schedule_with_warmup_ramps_then_steps():
    cfg = TrainConfig(lr=1.0, schedule="step", milestones=[1], warmup_ratio=0.25, gamma=0.5)
    got = lrs(cfg, per_epoch=2, total=8)  # warmup 2 steps: 1/2, 2/2; epoch 1 onwards (step 2) times 0.5
    assert got == [0.5, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    cfg = TrainConfig(lr=1.0, schedule="step", milestones=[1], warmup_ratio=0.5, gamma=0.5)
    got = lrs(cfg, per_epoch=2, total=8)  # warmup 4 steps crosses the milestone: the product of both
    assert got == [0.25, 0.5, 0.75 * 0.5, 1.0 * 0.5, 0.5, 0.5, 0.5, 0.5]


# -- the crops -------------------------------------------------------------------------------------------------
H, W = 4, 6
rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")


def test_scale_one_is_the_identity():
    crops = [A.Crop(0, 0, H, W, 1.0)]
    image = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8)
    assert torch.equal(A.crop_image(image, crops), image.float() / 255.0)
    seg = torch.randint(-1, 3, (1, H, W))
    depth = torch.rand(1, H, W)
    normals = torch.randn(1, 3, H, W)
    assert torch.equal(KINDS["seg"].crop(seg, crops), seg)
    assert torch.equal(KINDS["depth"].crop(depth, crops), depth)
    assert torch.allclose(KINDS["normals"].crop(normals, crops), normals, atol=1e-6)


@pytest.mark.parametrize("flip", [False, True])
def test_a_known_crop_equals_the_hand_computed_crop_resize(flip):
    top, left, h, w, s = 1, 1, 2, 4, 1.5  # int(4 / 1.5) = 2, int(6 / 1.5) = 4
    crops = [A.Crop(top, left, h, w, s, flip)]
    # bilinear with corners aligned reproduces a linear ramp: output (r, c) reads input (top + r(h-1)/(H-1), ...)
    src_r, src_c = top + rows * (h - 1) / (H - 1), left + cols * (w - 1) / (W - 1)
    # nearest (torch's): input (top + floor(r h / H), left + floor(c w / W))
    near_r, near_c = top + (rows * h // H).long(), left + (cols * w // W).long()
    mirror = (lambda t: t.flip(-1)) if flip else (lambda t: t)

    image = torch.stack([0.1 * rows + 0.01 * cols, 0.02 * cols, 0.05 * rows])[None]
    hand = torch.stack([0.1 * src_r + 0.01 * src_c, 0.02 * src_c, 0.05 * src_r])[None]
    assert torch.allclose(A.crop_image(image.float(), crops).double(), mirror(hand), atol=1e-6)

    seg = (torch.arange(H * W).reshape(1, H, W) % 3)
    assert torch.equal(KINDS["seg"].crop(seg, crops), mirror(seg[0][near_r, near_c][None]))
    depth = (1.0 + rows * W + cols)[None].float()
    assert torch.allclose(KINDS["depth"].crop(depth, crops), mirror(depth[0][near_r, near_c][None] / s))

    normals = torch.stack([0.1 * rows, 0.2 * cols, 0.3 + 0 * rows])[None].float()
    hand = mirror(torch.stack([0.1 * src_r, 0.2 * src_c, 0.3 + 0 * src_r])[None]).clone()
    if flip:
        hand[:, 0] = -hand[:, 0]  # a flipped scene's normals point the other way along x
    assert torch.allclose(KINDS["normals"].crop(normals, crops).double(), hand, atol=1e-6)


def test_the_same_seed_and_step_draw_the_same_crops_and_others_differ():
    a = A.draw(64, (288, 384), seed=3, step=17, flip=True)
    assert a == A.draw(64, (288, 384), seed=3, step=17, flip=True)
    assert a != A.draw(64, (288, 384), seed=3, step=18, flip=True)
    assert a != A.draw(64, (288, 384), seed=4, step=17, flip=True)
    assert {c.scale for c in a} == set(A.SCALES) and any(c.flip for c in a) and not all(c.flip for c in a)
    for c in a:  # the reference's box: int(H / s) x int(W / s), anywhere inside the image
        assert (c.height, c.width) == (int(288 / c.scale), int(384 / c.scale))
        assert 0 <= c.top <= 288 - c.height and 0 <= c.left <= 384 - c.width
    assert not any(c.flip for c in A.draw(64, (288, 384), seed=3, step=17, flip=False))


def test_a_task_that_predicts_no_map_is_refused_in_one_line():
    cls = TaskConfig(name="topic", input="image", target="classification", num_classes=3)
    line = ("task 'topic': train.augment crops images, but a classification task has no label map to crop with "
            "them; use train.augment=none")
    with pytest.raises(BenchError, match="^" + line.replace("(", r"\(").replace(")", r"\)") + "$"):
        A.check({"topic": task_kind(cls), **KINDS})
    with pytest.raises(BenchError, match="has no label map to crop"):
        task_kind(cls).crop(torch.zeros(2, dtype=torch.long), [])
    with pytest.raises(BenchError, match="has no label map to crop"):
        _trainer(TrainConfig(augment="scale_crop", num_workers=0), tasks=[cls])


# -- in the trainer --------------------------------------------------------------------------------------------
def _data():
    rng = np.random.default_rng(0)
    pre = ArrayPreprocessor("bench", image=True)

    def split(n: int) -> EncodedSplit:
        x = rng.integers(0, 256, (n, 3, SIDE, SIDE), dtype=np.uint8)
        depth = rng.uniform(0.5, 4.0, (n, SIDE, SIDE)).astype(np.float32)
        normals = rng.standard_normal((n, 3, SIDE, SIDE)).astype(np.float32)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        targets = {"seg": torch.as_tensor(rng.integers(-1, 3, (n, SIDE, SIDE))), "depth": torch.as_tensor(depth),
                   "normals": torch.as_tensor(normals), "topic": torch.as_tensor(rng.integers(0, 3, n))}
        return EncodedSplit(pre.encode(x), targets, None)

    shared = {"train": split(N), "validation": split(6)}
    return {t: shared for t in ("seg", "depth", "normals", "topic")}, pre


DATA, PRE = _data()


def _trainer(cfg: TrainConfig, tasks=TASKS, work_dir=None, on_epoch=None) -> Trainer:
    torch.manual_seed(0)
    model = MultiTaskModel(SmallCNN(3, 4), tasks)
    return Trainer(model, tasks, DATA, build_weighting("equal", tasks, {}), cfg, 0, PRE.collate, True,
                   work_dir=work_dir, on_epoch=on_epoch)


AUG = TrainConfig(epochs=3, batch_size=4, lr=1e-2, log_every=1, num_workers=0, augment="scale_crop_flip",
                  schedule="step", milestones=[2])


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_only_train_batches_are_augmented_each_step_by_its_own_draw(monkeypatch):
    calls = []

    def spy(inputs, targets, kinds, how, seed, step, part=0):
        calls.append((seed, step, part, tuple(inputs["x"].shape)))
        return A.augment(inputs, targets, kinds, how, seed, step, part)

    monkeypatch.setattr(trainer_module, "augment", spy)
    trainer = _trainer(AUG)
    trainer.fit()
    # 12 train images / batch 4 = 3 steps per epoch, 3 epochs; the validation passes (6 images each) never call it
    assert calls == [(0, s, 0, (4, 3, SIDE, SIDE)) for s in range(9)]
    assert trainer.state.step == 9 and len(trainer.state.history) == 3


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_draws_the_same_crops_and_ends_bit_identical(tmp_path):
    whole = _trainer(AUG)
    whole.fit()

    class Stop(Exception):
        pass

    def stop_after_two(epoch: int, score: float) -> None:
        if epoch == 2:  # epoch 1's resume state is written; epoch 2's is not
            raise Stop

    with pytest.raises(Stop):
        _trainer(AUG, work_dir=tmp_path, on_epoch=stop_after_two).fit()
    resumed = _trainer(AUG, work_dir=tmp_path)
    resumed.fit()
    assert [h["validation"] for h in resumed.state.history] == [h["validation"] for h in whole.state.history]
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.slow
def test_the_nyuv2_suite_trains_on_its_fixture_with_the_step_schedule_and_augmentation(tmp_path, results):
    from .test_nyuv2_data import NINE, write_layout

    write_layout(tmp_path)
    out = run_cli("run", "suite=nyuv2", f"data_dir={tmp_path}", "strategy=naive_mtl", "train.epochs=2",
                  "train.milestones=[1]", "backbone.name=resnet18", "backbone.pretrained=false",
                  "train.batch_size=2", f"results_dir={results}", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (rec,) = records(results)
    text = json.dumps(rec)  # the record's configuration carries the schedule and the augmentation
    assert '"schedule": "step", "milestones": [1], "gamma": 0.5, "augment": "scale_crop_flip"' in text
    test = rec["rows"]["naive_mtl"]["metrics"]["test"]
    assert {task: list(values) for task, values in test.items()} == NINE
    assert all(np.isfinite(v) for values in test.values() for v in values.values())


def test_augmenting_a_suite_without_maps_is_refused_when_planning():
    from bench.errors import BenchError
    from bench.plan import build_suite

    with pytest.raises(BenchError, match=r"task 'clean': train.augment crops images, but a regression task"):
        build_suite({"suite": "synthetic", "train.augment": "scale_crop"})
