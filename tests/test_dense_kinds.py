"""The dense kinds (segmentation, depth, normals): every metric on small hand-made maps against a hand count, the
same metrics recomputed and resampled by image from the kept stats, LibMTL's batch-by-batch formulas at two batch
sizes, the losses over labelled pixels only, the decoders' output size, and the one-line target refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.backbones.base import FeatureMaps, ViewShape
from bench.backbones.simple import build_cnn
from bench.config import BackboneConfig, TaskConfig
from bench.errors import BenchError
from bench.model import MultiTaskModel
from bench.stats.ratios import recipes_of
from bench.tasks import check_task, task_kind
from bench.tasks.decoders import DecoderParams, DeepLabHead, FPNHead, build_decoder, decoder_params

pytestmark = pytest.mark.usefixtures("one_thread")
N = np.nan


def _kind(target: str, **kw):
    return check_task(TaskConfig(name=target[:3], input="image", target=target, **kw))


def _resampled(kind, stats: np.ndarray, idx: list[int]) -> dict[str, float]:
    """Every metric of ``kind`` from the stats of images ``idx`` (with repeats), through the recipes the report uses."""
    recipes = recipes_of(kind.record_spec())
    reps = {m: r.replicates(stats, np.array([idx])) for m, r in recipes.items()}
    direct = {m: r.value(stats[idx]) for m, r in recipes.items()}
    for m in recipes:  # a replicate is the metric on the resampled images
        assert reps[m][0] == pytest.approx(direct[m], abs=1e-12)
    return direct


# ------------------------------------------------------------------------------------------------ segmentation

SEG_T = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [-1, -1, 1, 1], [0, 0, 0, 0]],
                  [[1, 1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1], [-1, -1, -1, -1]],
                  np.full((4, 4), -1)])  # the third image has no label at all
SEG_P = np.array([[[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 1, 1], [0, 0, 0, 2]],
                  [[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
                  np.full((4, 4), 3)])
# by hand: image 0: 14 labelled pixels; class 0 gold 8, predicted 7, both 6 (union 9); class 1 gold 6, predicted 6,
# both 5 (union 7); class 2 predicted once (union 1). Image 1: 8 labelled, class 1 gold 8, predicted 6 (union 8);
# class 0 predicted twice (union 2). Class 3 is nowhere in gold or labelled predictions: not averaged.


def test_segmentation_metrics_equal_the_hand_count():
    kind = _kind("segmentation", num_classes=4)
    metrics, kept = kind.score(SEG_T, SEG_P)
    assert metrics == {"miou": (6 / 11 + 11 / 15 + 0) / 3, "pixel_acc": 17 / 22}
    cols = kind.stats_columns()
    assert cols == ["valid", "inter@0", "inter@1", "inter@2", "inter@3", "union@0", "union@1", "union@2", "union@3"]
    assert kept["stats"].tolist() == [[14, 6, 5, 0, 0, 9, 7, 1, 0], [8, 0, 6, 0, 0, 2, 8, 0, 0], [0] * 9]
    assert kept["target"].tolist() == [14, 8, 0] and kept["id"].tolist() == [0, 1, 2]
    assert kept["pred"].tolist() == pytest.approx([(6 / 9 + 5 / 7) / 3, 0.75 / 2, 0.0])  # each image alone
    assert kept["preview_target"].dtype == np.int8 and (kept["preview_target"] == SEG_T).all()
    # resampled by image: image 0 alone, image 1 twice, all with a repeat
    assert _resampled(kind, kept["stats"], [0]) == {"miou": (6 / 9 + 5 / 7 + 0) / 3, "pixel_acc": 11 / 14}
    assert _resampled(kind, kept["stats"], [1, 1, 2]) == {"miou": (0 / 4 + 12 / 16) / 2, "pixel_acc": 12 / 16}
    assert _resampled(kind, kept["stats"], [0, 1, 2]) == metrics
    loo = recipes_of(kind.record_spec())["miou"].leave_one_out(kept["stats"])
    assert loo.tolist() == pytest.approx([0.375, (6 / 9 + 5 / 7) / 3, metrics["miou"]])


def _libmtl_seg(target: np.ndarray, logits: np.ndarray, k: int, batch: int) -> tuple[float, float]:
    """LibMTL's SegMetric, batch by batch: a confusion matrix over labelled pixels, then IoU per class (here averaged
    over the classes with a positive union, which is LibMTL's mean when every class is present)."""
    h = np.zeros((k, k))
    for s in range(0, len(target), batch):
        gt, pred = target[s:s + batch].ravel(), logits[s:s + batch].argmax(1).ravel()
        keep = (gt >= 0) & (gt < k)
        h += np.bincount(k * gt[keep] + pred[keep], minlength=k * k).reshape(k, k)
    union = h.sum(1) + h.sum(0) - np.diag(h)
    iou = np.diag(h)[union > 0] / union[union > 0]
    return float(iou.mean()), float(np.diag(h).sum() / h.sum())


def test_segmentation_agrees_with_libmtl_at_any_batch_size():
    rng = np.random.default_rng(0)
    target = rng.integers(-1, 5, size=(7, 9, 11))
    logits = rng.normal(size=(7, 5, 9, 11)).astype(np.float32)
    kind = _kind("segmentation", num_classes=5)
    pred = kind.predict(torch.from_numpy(logits)).numpy()
    metrics, _ = kind.score(target, pred)
    for batch in (1, 3, 8):
        miou, acc = _libmtl_seg(target, logits, 5, batch)
        assert metrics["miou"] == pytest.approx(miou, abs=1e-12) and metrics["pixel_acc"] == pytest.approx(acc, abs=1e-12)


# ------------------------------------------------------------------------------------------------ depth

DEPTH_T = np.stack([np.full((4, 4), 2.0), np.zeros((4, 4)), np.zeros((4, 4))]).astype(np.float32)
DEPTH_T[0, 0, 0], DEPTH_T[0, 0, 1] = 0.0, N  # two invalid pixels in image 0
DEPTH_T[1, 0] = 4.0  # image 1: only its first row is valid; image 2: none
DEPTH_P = np.stack([np.full((4, 4), 3.0), np.ones((4, 4)), np.full((4, 4), 7.0)]).astype(np.float32)
DEPTH_P[0, 0, :2] = 100.0  # a prediction on invalid pixels counts nowhere


def test_depth_metrics_equal_the_hand_count():
    kind = _kind("depth")
    metrics, kept = kind.score(DEPTH_T, DEPTH_P)
    # image 0: 14 pixels, |3 − 2| = 1, relative 1/2; image 1: 4 pixels, |1 − 4| = 3, relative 3/4
    assert metrics == {"abs_err": (14 + 12) / 18, "rel_err": (7 + 3) / 18}
    assert kept["stats"].tolist() == [[14, 14, 7], [4, 12, 3], [0, 0, 0]]
    assert _resampled(kind, kept["stats"], [1]) == {"abs_err": 3.0, "rel_err": 0.75}
    assert _resampled(kind, kept["stats"], [0, 0, 1]) == {"abs_err": 40 / 32, "rel_err": 17 / 32}
    assert kept["preview_pred"].dtype == np.float16 and kept["preview_target"].shape == (3, 4, 4)
    # (N, 1, H, W) targets are the same maps
    assert kind.score(DEPTH_T[:, None], DEPTH_P)[0] == metrics


def test_depth_agrees_with_libmtl_at_any_batch_size():
    """LibMTL's DepthMetric: per-batch means over valid pixels, weighted by each batch's valid-pixel count."""
    rng = np.random.default_rng(1)
    target = rng.uniform(0.5, 5, size=(7, 1, 6, 5)) * (rng.random((7, 1, 6, 5)) > 0.3)
    pred = rng.uniform(0.5, 5, size=(7, 6, 5))
    metrics, _ = _kind("depth").score(target, pred)
    for batch in (1, 2, 8):
        means, counts = [], []
        for s in range(0, 7, batch):
            g, p = target[s:s + batch, 0], pred[s:s + batch]
            keep = g != 0
            if keep.any():
                err = np.abs(p[keep] - g[keep])
                means.append((err.mean(), (err / g[keep]).mean()))
                counts.append(keep.sum())
        ref = np.average(np.array(means), axis=0, weights=counts)
        assert [metrics["abs_err"], metrics["rel_err"]] == pytest.approx(ref.tolist(), abs=1e-12)


# ------------------------------------------------------------------------------------------------ normals

ANGLES_0 = [0.05, 3.05, 5.05, 8.05, 11.05, 11.35, 14.05, 20.05, 22.45, 25.05, 29.95, 33.05, 60.05, 120.05]
ANGLES_1 = [1.05, 2.05, 12.05, 22.55, 30.05, 45.05, 90.05, 179.95]  # each angle at the centre of its 0.1° bin


def _normal_maps() -> tuple[np.ndarray, np.ndarray]:
    """Targets (0, 0, 1) and predictions at the angles above (scaled: predictions are normalised when scored);
    image 0's first two pixels are invalid (all zero, NaN), image 1's last 8, image 2's all."""
    target = np.zeros((3, 3, 4, 4))
    pred = np.random.default_rng(2).normal(size=(3, 3, 4, 4))
    for i, angles in enumerate([ANGLES_0, ANGLES_1]):
        start = 2 if i == 0 else 0
        for j, a in enumerate(angles):
            y, x = divmod(start + j, 4)
            target[i, 2, y, x] = 1.0
            pred[i, :, y, x] = 3.0 * np.array([math.sin(math.radians(a)), 0.0, math.cos(math.radians(a))])
    target[0, :, 0, 1] = N
    return target.astype(np.float32), pred.astype(np.float64)


def test_normal_metrics_equal_the_hand_count():
    kind = _kind("normals")
    target, pred = _normal_maps()
    metrics, kept = kind.score(target, pred)
    both = ANGLES_0 + ANGLES_1
    # 22 angles: sorted, the 11th and 12th are 20.05 and 22.45; below 11.25: 7, below 22.5: 12, below 30: 15
    expected = {"mean_angle": sum(both) / 22, "median_angle": (20.05 + 22.45) / 2, "within_11.25": 7 / 22,
                "within_22.5": 12 / 22, "within_30": 15 / 22}
    assert list(metrics) == list(expected)
    assert metrics == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(kept["stats"][:, :5], [[14, sum(ANGLES_0), 5, 9, 11], [8, sum(ANGLES_1), 2, 3, 4],
                                                      [0, 0, 0, 0, 0]], rtol=0, atol=1e-11)
    assert kept["stats"][:, 5:].sum(1).tolist() == [14, 8, 0] and kept["stats"].shape[1] == 5 + 1800
    assert _resampled(kind, kept["stats"], [0]) == pytest.approx(
        {"mean_angle": sum(ANGLES_0) / 14, "median_angle": (14.05 + 20.05) / 2, "within_11.25": 5 / 14,
         "within_22.5": 9 / 14, "within_30": 11 / 14}, abs=1e-12)
    assert _resampled(kind, kept["stats"], [1, 2, 1])["median_angle"] == pytest.approx((22.55 + 30.05) / 2, abs=1e-12)
    assert np.allclose(np.linalg.norm(kept["preview_pred"].astype(float), axis=1), 1, atol=1e-3)


def test_median_angle_is_within_one_bin_of_numpy_median():
    """The histogram median against numpy's median of the exact angles (LibMTL's np.median), on every resample."""
    rng = np.random.default_rng(3)
    target = rng.normal(size=(6, 3, 8, 7))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    target[:, :, :2] = 0.0  # invalid rows
    pred = target + rng.normal(scale=0.4, size=target.shape)
    kind = _kind("normals")
    _, kept = kind.score(target, pred)
    median = recipes_of(kind.record_spec())["median_angle"]
    tp = target.transpose(0, 2, 3, 1)
    pn = pred.transpose(0, 2, 3, 1) / np.linalg.norm(pred.transpose(0, 2, 3, 1), axis=-1, keepdims=True)
    exact = [np.degrees(np.arccos(np.clip((pn[i] * tp[i]).sum(-1), -1, 1)))[2:].ravel() for i in range(6)]
    for idx in ([0, 1, 2, 3, 4, 5], [0], [5, 5, 2], [1, 3]):
        assert abs(median.value(kept["stats"][idx]) - np.median(np.concatenate([exact[i] for i in idx]))) < 0.1


# ------------------------------------------------------------------------------------------------ losses


@pytest.mark.parametrize("name", ["segmentation", "depth", "normals"])
def test_losses_read_labelled_pixels_only(name):
    kind = _kind(name, **({"num_classes": 4} if name == "segmentation" else {}))
    rng = np.random.default_rng(4)
    target = kind.encode_targets({"segmentation": SEG_T, "depth": DEPTH_T, "normals": _normal_maps()[0]}[name], {})
    out = torch.from_numpy(rng.normal(size=(3, kind.out_channels, 4, 4)).astype(np.float32)).requires_grad_()
    loss = kind.loss(kind.output(out), target)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grad = out.grad.abs().sum(1)
    assert (grad[~kind.valid(target)] == 0).all() and (grad[kind.valid(target)] > 0).all()  # and flows to the rest
    changed = out.detach().clone()
    changed[~kind.valid(target)[:, None].expand_as(changed)] = 1e3  # predictions on unlabelled pixels
    assert kind.loss(kind.output(changed), target) == loss.detach()
    none = kind.unlabel(target.numpy(), np.arange(3))
    zero = kind.loss(kind.output(out), kind.encode_targets(none, {}))
    assert zero.item() == 0.0 and zero.requires_grad
    assert kind.labelled(target).tolist() == [True, True, False]


def test_losses_equal_libmtl_formulas_on_labelled_pixels():
    rng = np.random.default_rng(5)
    out = torch.from_numpy(rng.normal(size=(3, 3, 4, 4)).astype(np.float32))
    n = torch.from_numpy(_normal_maps()[0])
    keep = ~torch.isnan(n).any(1) & (n != 0).any(1)
    cos = (torch.nn.functional.normalize(out, dim=1) * torch.nan_to_num(n)).sum(1)
    assert _kind("normals").loss(out, n).item() == pytest.approx((1 - cos[keep]).mean().item(), abs=1e-6)
    d = _kind("depth")
    t = d.encode_targets(DEPTH_T, {})
    assert d.loss(out[:, 0], t).item() == pytest.approx((out[:, 0] - t).abs()[d.valid(t)].mean().item(), abs=1e-6)
    s = _kind("segmentation", num_classes=3)
    seg = torch.from_numpy(np.clip(SEG_T, -1, 2))
    ce = torch.nn.functional.cross_entropy(out, seg, ignore_index=-1)  # LibMTL's SegLoss
    assert s.loss(out, seg).item() == pytest.approx(ce.item(), abs=1e-6)


def test_segmentation_entropy_and_samples_come_from_the_pixel_softmax():
    kind = _kind("segmentation", num_classes=4)
    assert kind.entropy(torch.zeros(2, 4, 3, 5)).item() == pytest.approx(math.log(4))  # uniform everywhere
    logits = torch.full((2, 4, 3, 5), -50.0)
    logits[:, 2] = 50.0
    logits[1, :, 0, 0] = torch.tensor([50.0, -50, -50, -50])
    drawn = kind.sample(logits, torch.Generator().manual_seed(0))
    expected = torch.full((2, 3, 5), 2)
    expected[1, 0, 0] = 0
    assert drawn.shape == (2, 3, 5) and torch.equal(drawn, expected)


# ------------------------------------------------------------------------------------------------ decoders


def _maps(size=(37, 29), channels=(8, 16, 24)) -> FeatureMaps:
    torch.manual_seed(0)
    shapes = [size, ((size[0] + 1) // 2, (size[1] + 1) // 2), ((size[0] + 3) // 4, (size[1] + 3) // 4)]
    return FeatureMaps(tuple(torch.randn(2, c, *s) for c, s in zip(channels, shapes)), size)


@pytest.mark.parametrize("decoder", ["fpn", "aspp"])
def test_decoders_predict_at_the_input_size(decoder):
    maps = _maps()
    shape = ViewShape(24, (8, 16, 24), (1, 2, 4))
    for name, k in (("segmentation", 5), ("depth", 1), ("normals", 3)):
        kind = _kind(name, **({"num_classes": 5} if name == "segmentation" else {}))
        head = kind.build_head(shape) if decoder == "fpn" else DeepLabHead(24, k, 16, (1, 2, 3))
        assert isinstance(head, FPNHead if decoder == "fpn" else DeepLabHead)
        y = head(maps)
        assert y.shape == (2, k, 37, 29)
        kind.loss(kind.output(y), torch.zeros((2, 37, 29), dtype=torch.long) if k == 5 else
                  kind.encode_targets(np.ones((2, 37, 29), np.float32) if k == 1 else
                                      np.tile(np.array([0, 0, 1], np.float32)[None, :, None, None], (2, 1, 37, 29)),
                                      {})).backward()
        assert all(p.grad is not None for p in head.parameters())


def test_decoder_options_and_refusals():
    class WithHead:  # a configuration that has the ``head:`` mapping
        name, head = "seg", {"decoder": "aspp", "width": 0}

    with pytest.raises(BenchError, match=r"^task 'seg': head option 'width'.*decoder \(fpn\|aspp\), width") as e:
        decoder_params(WithHead())
    assert "\n" not in str(e.value)
    assert decoder_params(TaskConfig(name="d", input="image", target="depth")).decoder == "fpn"
    shape = ViewShape(24, (8, 16, 24), (1, 2, 4))
    for decoder in ("fpn", "aspp"):  # a depth head may start at a typical depth
        head = build_decoder(DecoderParams(decoder=decoder, width=8, bias=5.0), shape, 1)
        assert head.output.bias.tolist() == [5.0]
    with pytest.raises(BenchError, match="reads feature maps, but the backbone offers none; use a backbone"):
        _kind("depth").build_head(ViewShape(16))


# ------------------------------------------------------------------------------------------------ targets


@pytest.mark.parametrize(("name", "y", "message"), [
    ("segmentation", np.zeros((2, 4)), r"segmentation targets of shape \(2, 4\); give \(images, H, W\)"),
    ("segmentation", np.zeros((2, 4, 4)), r"dtype float64; give integer class ids"),
    ("segmentation", np.array([[[0, 4], [-1, 1]]]), r"class id 4 at image 0, pixel \(0, 1\); ids are 0\.\.3"),
    ("segmentation", np.array([[[0, -2], [-1, 1]]]), r"class id -2 at image 0, pixel \(0, 1\)"),
    ("depth", np.zeros((2, 3, 4, 4), np.float32), r"depth targets of shape \(2, 3, 4, 4\); give \(images, H, W\)"),
    ("depth", np.array([[[1.0, -0.5]]]), r"has depth -0\.5 at image 0, pixel \(0, 1\); a depth is a finite number"),
    ("depth", np.array([[[1.0, np.inf]]]), r"has depth inf at"),
    ("depth", np.ones((1, 2, 2), np.int64), r"dtype int64; give floats"),
    ("normals", np.zeros((1, 2, 4, 4)), r"normals targets of shape \(1, 2, 4, 4\); give \(images, 3, H, W\)"),
    ("normals", np.full((1, 3, 1, 2), 0.5), r"normal of length 0\.866 at image 0, pixel \(0, 0\); give unit vectors"),
])
def test_bad_targets_are_refused_in_one_line(name, y, message):
    kind = _kind(name, **({"num_classes": 4} if name == "segmentation" else {}))
    with pytest.raises(BenchError, match=message) as e:
        kind.check_targets(y, "scenes/train")
    assert str(e.value).startswith("scenes/train: task ") and "\n" not in str(e.value)


def test_valid_targets_pass_and_sizes_must_match_the_images():
    _kind("segmentation", num_classes=4).check_targets(SEG_T, "x")
    _kind("depth").check_targets(DEPTH_T, "x")
    _kind("normals").check_targets(_normal_maps()[0], "x")
    with pytest.raises(BenchError, match=r"has 4x4 label maps for 8x8 images; give maps at the images' size"):
        _kind("depth").check_inputs(np.zeros((3, 3, 8, 8), np.uint8), DEPTH_T, "x")


def test_kind_attributes_and_record_spec():
    for name, metrics in (("segmentation", ["miou", "pixel_acc"]), ("depth", ["abs_err", "rel_err"]),
                          ("normals", ["mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"])):
        kind = task_kind(TaskConfig(name="t", input="image", target=name, num_classes=3))
        assert (kind.reads, kind.unit, kind.preview, kind.metric_names, kind.primary) == (
            "maps", "pixel", 4, metrics, metrics[0])
        spec = kind.record_spec()
        assert list(spec["recipes"]) == metrics and spec["stats"][0] == "valid"
        bounds = {m: r.bounds for m, r in recipes_of(spec).items()}
        assert all(lo == 0 for lo, _ in bounds.values())
    assert {m: task_kind(TaskConfig(name="t", input="image", target="normals")).direction(m)
            for m in ["mean_angle", "within_30"]} == {"mean_angle": "min", "within_30": "max"}
    with pytest.raises(BenchError, match=r"metric 'accuracy' is not a depth metric \(abs_err, rel_err\)"):
        check_task(TaskConfig(name="d", input="image", target="depth", metrics=["accuracy"]))
    with pytest.raises(BenchError, match="a segmentation task needs num_classes"):
        check_task(TaskConfig(name="s", input="image", target="segmentation"))


def test_the_model_routes_maps_to_the_dense_heads():
    """The three kinds on the cnn backbone's maps through MultiTaskModel: outputs at an odd input size, every
    labelled loss reaching the shared backbone, and scoring what the heads predict."""
    torch.manual_seed(0)
    tasks = [TaskConfig(name="seg", input="image", target="segmentation", num_classes=4),
             TaskConfig(name="dep", input="image", target="depth"),
             TaskConfig(name="nor", input="image", target="normals")]
    x = np.random.default_rng(6).integers(0, 255, (3, 3, 9, 7), dtype=np.uint8)
    backbone, pre = build_cnn(BackboneConfig(source="cnn"), "image", x)
    model = MultiTaskModel(backbone, tasks)
    out = model(pre.encode(x), ["seg", "dep", "nor"])
    assert [tuple(out[t].shape) for t in ("seg", "dep", "nor")] == [(3, 4, 9, 7), (3, 9, 7), (3, 3, 9, 7)]
    targets = {"seg": np.zeros((3, 9, 7), np.int64), "dep": np.ones((3, 9, 7), np.float32),
               "nor": np.tile(np.array([0, 0, 1], np.float32)[None, :, None, None], (3, 1, 9, 7))}
    for t, cfg in zip(("seg", "dep", "nor"), tasks):
        kind = task_kind(cfg)
        model.zero_grad()
        kind.loss(out[t], kind.encode_targets(targets[t], {})).backward(retain_graph=True)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
        metrics, kept = kind.score(targets[t], kind.predict(out[t].detach()).numpy())
        assert list(metrics) == kind.metric_names and kept["stats"].shape == (3, len(kind.stats_columns()))
