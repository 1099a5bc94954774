"""``segmentation``: a class per pixel (NYUv2's 13 classes, CityScapes' 7), -1 marks an unlabelled pixel.

Loss: cross-entropy over the labelled pixels of the batch (LibMTL examples/nyu/utils.py ``SegLoss``:
``nn.CrossEntropyLoss(ignore_index=-1)``), an exact 0 when a batch has none. Metrics as LibMTL's ``SegMetric``
(a confusion matrix over every labelled pixel of the split): ``miou``, the mean over classes of intersection / union,
and ``pixel_acc``, correct / labelled pixels. Per image the stats are the labelled pixels and, per class, the
intersection and union counts (``inter@<class>``, ``union@<class>``); union is additive over images (it is gold +
predicted − intersection, all counts), so the split's IoU of a class is Σ inter / Σ union: a ratio of sums, not a
mean of per-image IoUs. The mean is over the classes whose union is positive (present in the gold or the predicted
labels); LibMTL's ``torch.mean`` over all K classes equals it whenever every class is present, and is NaN otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.augment import Crop, crop_resize
from bench.errors import BenchError
from bench.tasks.base import register_task_kind
from bench.tasks.dense_base import VALID, DenseKind, first_bad, spatial_ok

IGNORE = -1


@register_task_kind("segmentation")
class Segmentation(DenseKind):
    """A class per pixel: cross-entropy ignoring -1; mIoU over present classes and pixel accuracy, pooled."""

    metrics = {"miou": "max", "pixel_acc": "max"}
    likelihood = "categorical"

    @property
    def classes(self) -> list[str]:
        return list(self.task.classes or [str(c) for c in range(int(self.task.num_classes or 0))])

    @property
    def out_channels(self) -> int:
        return len(self.classes)

    def validate(self) -> None:
        if len(self.classes) < 2:
            raise BenchError(f"task {self.task.name!r}: a segmentation task needs num_classes (at least 2) or "
                             "classes: [names in id order]")
        super().validate()

    def stats_columns(self) -> list[str]:
        return [VALID, *(f"inter@{c}" for c in self.classes), *(f"union@{c}" for c in self.classes)]

    def recipes(self) -> dict[str, dict[str, Any]]:
        iou = [{"num": {f"inter@{c}": 1}, "den": {f"union@{c}": 1}} for c in self.classes]
        correct = {"num": {f"inter@{c}": 1 for c in self.classes}, "den": {VALID: 1}}
        return {"miou": {"ratios": iou, "bounds": [0, 1]}, "pixel_acc": {"ratios": [correct], "bounds": [0, 1]}}

    # -- the model ---------------------------------------------------------------------------------------------
    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return target >= 0

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        count = (target >= 0).sum().clamp_min(1)
        return F.cross_entropy(output.float(), target.long(), ignore_index=IGNORE, reduction="sum") / count

    def entropy(self, output: torch.Tensor) -> torch.Tensor:
        """Mean over pixels of the softmax entropy (every pixel: AdaMerging's objective needs no label)."""
        logp = F.log_softmax(output.float(), dim=1)
        return -(logp.exp() * logp).sum(1).mean()

    def sample(self, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A class per pixel drawn from the softmax (the "model" Fisher), (B, H, W)."""
        probs = F.softmax(output.detach().float(), 1).movedim(1, -1)
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
        return drawn.reshape(probs.shape[:-1])

    def crop(self, target: torch.Tensor, crops: Sequence[Crop]) -> torch.Tensor:
        """Nearest class (class ids are exact in float32): the reference's ``label_``."""
        return crop_resize(target[:, None].float(), crops, "nearest")[:, 0].to(target.dtype)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(1).to(torch.uint8 if self.out_channels <= 256 else torch.int32)

    # -- evaluation --------------------------------------------------------------------------------------------
    def image_stats(self, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
        k, n = self.out_channels, len(target)
        t, p = np.asarray(target, dtype=np.int64), np.asarray(pred, dtype=np.int64)
        keep = (t >= 0) & (t < k)
        image = np.broadcast_to(np.arange(n)[:, None, None], t.shape)[keep]
        # one confusion matrix per image (gold row, predicted column) over its labelled pixels, as LibMTL's
        cm = np.bincount((image * k + t[keep]) * k + p[keep], minlength=n * k * k).reshape(n, k, k)
        inter = np.diagonal(cm, axis1=1, axis2=2)
        union = cm.sum(2) + cm.sum(1) - inter
        return np.concatenate([cm.sum((1, 2))[:, None], inter, union], axis=1).astype(float)

    def compact(self, maps: np.ndarray, what: str) -> np.ndarray:
        return np.asarray(maps).astype(np.int8 if self.out_channels <= 127 else np.int16)

    # -- data --------------------------------------------------------------------------------------------------
    def check_targets(self, y: Any, where: str) -> None:
        y, k, name = np.asarray(y), self.out_channels, self.task.name
        spatial_ok(y, None, name, "segmentation", where, "of class ids (-1: unlabelled pixel)")
        if not np.issubdtype(y.dtype, np.integer):
            raise BenchError(f"{where}: task {name!r} has segmentation targets of dtype {y.dtype}; give integer "
                             "class ids (e.g. .astype(np.int64); -1: unlabelled pixel)")
        bad = (y < IGNORE) | (y >= k)
        if bad.any():
            raise BenchError(f"{where}: task {name!r} has class id {y[bad].flat[0]} at {first_bad(bad)}; ids are "
                             f"0..{k - 1} (-1: unlabelled pixel); fix num_classes or the source")

    def unlabel(self, y: Any, idx: np.ndarray) -> np.ndarray:
        out = np.array(y, dtype=np.int64)
        out[idx] = IGNORE
        return out

    def encode_targets(self, y: Any, encoded: dict[str, Any]) -> torch.Tensor:
        return torch.from_numpy(np.array(y, dtype=np.int64))
