"""Train-time augmentation of dense batches (``train.augment``): the random scale-crop of the NYUv2/CityScapes papers.

``scale_crop`` is MTAN's ``RandomScaleCrop`` as LibMTL, Nash-MTL and FAMO train with it (LibMTL
``examples/nyu/create_dataset.py`` lines 11-28, commit 233257f; AvivNavon/nash-mtl ``experiments/nyuv2/data.py``
lines 15-53, commit c517626; Cranial-XIX/FAMO ``experiments/cityscapes/data.py``, without normals): per image a scale
s drawn from (1.0, 1.2, 1.5), a crop of ``int(H / s)`` × ``int(W / s)`` at a uniformly drawn corner, resized back to
H × W. The image is resized bilinearly with corners aligned, segmentation and depth by nearest neighbour, depth
divided by s (a nearer-looking scene), normals bilinearly with corners aligned and not renormalised, exactly as the
reference code does. ``scale_crop_flip`` adds their horizontal flip with probability ½ after the crop (the same files'
``__getitem__``: LibMTL lines 66-73, nash-mtl lines 104-114), which negates the normals' x component.

The draws come from a generator seeded by (the trainer's seed, the step number), so a resumed run draws the same
crops; the trainer applies them to TRAIN batches only, on the device, after collation (validation and test are never
augmented). Each task's kind transforms its own targets (:meth:`bench.tasks.base.TaskKind.crop`); this module holds
the draws and the crop-resize they share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError

SCALES = (1.0, 1.2, 1.5)
AUGMENTS = ("scale_crop", "scale_crop_flip")  # train.augment's values besides none


@dataclass(frozen=True)
class Crop:
    """One image's draw: the box ``[top, top + height) × [left, left + width)``, its scale, and whether to flip."""

    top: int
    left: int
    height: int
    width: int
    scale: float
    flip: bool = False


def draw(n: int, size: tuple[int, int], seed: int, step: int, flip: bool, part: int = 0) -> list[Crop]:
    """The crops of one batch of ``n`` images of ``size`` (H, W), from a generator seeded by (seed, step, part)
    alone: its own stream, which no other draw of the trainer moves, so a resumed run draws the same crops."""
    rng = np.random.default_rng([seed, step, part, 0xA06])
    height, width = size
    out = []
    for _ in range(n):
        s = SCALES[int(rng.integers(len(SCALES)))]
        h, w = int(height / s), int(width / s)
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        out.append(Crop(top, left, h, w, s, bool(rng.random() < 0.5) if flip else False))
    return out


def crop_resize(x: torch.Tensor, crops: Sequence[Crop], mode: str) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) cropped to its box, resized back to H × W and flipped when drawn so;
    ``mode``: ``bilinear`` (corners aligned) or ``nearest``. Float in, float out."""
    size = tuple(x.shape[-2:])
    out = []
    for img, c in zip(x, crops):
        part = img[None, :, c.top:c.top + c.height, c.left:c.left + c.width]
        if mode == "bilinear":
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=True)
        else:
            part = F.interpolate(part, size=size, mode="nearest")
        out.append(part.flip(-1) if c.flip else part)
    return torch.cat(out)


def crop_image(x: torch.Tensor, crops: Sequence[Crop]) -> torch.Tensor:
    """The images (N, C, H, W), uint8 or float in [0, 1], cropped: float in [0, 1] (the image backbones take both)."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return crop_resize(x, crops, "bilinear")


def not_croppable(task: str, kind: str) -> BenchError:
    """The one line for a task whose labels cannot move with its image (every kind but the dense ones)."""
    return BenchError(f"task {task!r}: train.augment crops images, but a {kind} task has no label map to crop "
                      "with them; use train.augment=none")


def check(kinds: Mapping[str, Any]) -> None:
    """Refuse, before any step, augmentation of a task that predicts no map (a kind whose head reads no maps)."""
    for task, kind in kinds.items():
        if kind.reads != "maps":
            raise not_croppable(task, kind.name)


def augment(inputs: dict[str, Any], targets: dict[str, torch.Tensor], kinds: Mapping[str, Any], how: str,
            seed: int, step: int, part: int = 0) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One train batch (after collation, on its device) under ``how`` (``scale_crop``, ``scale_crop_flip``): every
    image input (N, C, H, W) and each task's targets, by its kind (``kinds[task].crop``); the draws from (seed, step,
    ``part``: the batch's place in a step of several)."""
    images = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.ndim == 4}
    if not images:
        raise BenchError(f"train.augment={how} crops images, but the batch has no (N, C, H, W) image input "
                         f"(inputs: {', '.join(inputs)}); use train.augment=none")
    first = next(iter(images.values()))
    crops = draw(len(first), tuple(first.shape[-2:]), seed, step, how == "scale_crop_flip", part)
    return ({**inputs, **{k: crop_image(v, crops) for k, v in images.items()}},
            {t: kinds[t].crop(y, crops) for t, y in targets.items()})
