"""``normals``: a unit surface normal per pixel, (images, 3, H, W); an all-zero (or NaN) vector is an invalid pixel.

Loss: 1 − cosine between the L2-normalised prediction and the target, averaged over the valid pixels of the batch
(LibMTL examples/nyu/utils.py ``NormalLoss``), an exact 0 when a batch has none. Metrics as LibMTL's ``NormalMetric``,
on the angle error in degrees (arccos of the clipped dot product of the normalised prediction and the target) of
every valid pixel of the split pooled: ``mean_angle``, ``median_angle``, and ``within_11.25``, ``within_22.5``,
``within_30``, the fractions of pixels with an error strictly below 11.25°, 22.5° and 30°. LibMTL concatenates the
per-pixel errors of all batches before taking means and the median, so its values do not depend on the evaluation
batch size; neither do these.

Per image the stats are its valid pixels, the exact sum of their angles, the exact counts below each threshold, and a
histogram of the angles in :data:`BINS` bins of :data:`WIDTH`° over [0°, 180°] (``angle_bin@0`` ...). The mean and
the fractions are ratios of sums (exact); the median is the median of the summed histogram with the values of a bin
spread evenly over it (:class:`bench.stats.ratios.HistogramMedian`), which is within one bin, 0.1°, of numpy's
median of the exact angles (in practice far closer: the median's bin holds many pixels), and exact when each bin
holds at most one angle, at its centre.

Differences from LibMTL, all at the edges: LibMTL marks a pixel valid when its components' sum is non-zero, which
also drops a unit normal whose components sum to exactly 0; here only an all-zero (or non-finite) vector is invalid.
LibMTL divides the prediction by its norm unguarded (a zero prediction gives NaN); here it is normalised with an
epsilon (a zero prediction scores 90°). Angles are computed in float64 (LibMTL: float32 on the device).
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

THRESHOLDS = (11.25, 22.5, 30.0)
WITHIN = {f"within_{t:g}": t for t in THRESHOLDS}  # metric name -> threshold (degrees)
WIDTH = 0.1  # degrees per histogram bin: the median's tolerance
BINS = 1800  # bins of WIDTH over [0, 180]; the last one also holds 180 itself
UNIT_TOLERANCE = 1e-2  # how far from 1 a valid target normal's length may be


def valid_normals(normals: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Valid pixels (B, H, W) of normals (B, 3, H, W): a finite vector that is not all zero (torch or numpy)."""
    if isinstance(normals, torch.Tensor):
        return torch.isfinite(normals).all(1) & (normals != 0).any(1)
    return np.isfinite(normals).all(1) & (normals != 0).any(1)


@register_task_kind("normals")
class Normals(DenseKind):
    """A unit normal per pixel: 1 − cosine over valid pixels; mean and median angle, fractions within 11.25/22.5/30°."""

    metrics = {"mean_angle": "min", "median_angle": "min", **{m: "max" for m in WITHIN}}
    likelihood = "von_mises_fisher"

    @property
    def out_channels(self) -> int:
        return 3

    def stats_columns(self) -> list[str]:
        return [VALID, "angle_sum", *(f"below@{t:g}" for t in THRESHOLDS), *(f"angle_bin@{j}" for j in range(BINS))]

    def recipes(self) -> dict[str, dict[str, Any]]:
        within = {m: {"ratios": [{"num": {f"below@{t:g}": 1}, "den": {VALID: 1}}], "bounds": [0, 1]}
                  for m, t in WITHIN.items()}
        return {"mean_angle": {"ratios": [{"num": {"angle_sum": 1}, "den": {VALID: 1}}], "bounds": [0, 180]},
                "median_angle": {"median": {"bins": "angle_bin@", "width": WIDTH}, "bounds": [0, 180]}, **within}

    # -- the model ---------------------------------------------------------------------------------------------
    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return valid_normals(target)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = valid_normals(target)
        gold = torch.where(mask[:, None], target, 0.0).float()  # NaN targets never reach the graph
        cos = (F.normalize(output.float(), dim=1) * gold).sum(1)
        return torch.where(mask, 1.0 - cos, 0.0).sum() / mask.sum().clamp_min(1)

    def crop(self, target: torch.Tensor, crops: Sequence[Crop]) -> torch.Tensor:
        """Bilinear with corners aligned and not renormalised, as the reference's ``normal_``; a flipped image's
        normals point the other way along x (LibMTL ``normal[0, :, :] = - normal[0, :, :]``)."""
        out = crop_resize(target, crops, "bilinear").to(target.dtype)
        flip = torch.tensor([c.flip for c in crops], device=target.device)
        out[:, 0] = torch.where(flip[:, None, None], -out[:, 0], out[:, 0])
        return out

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.float()  # normalised when scored, in float64

    # -- evaluation --------------------------------------------------------------------------------------------
    def image_stats(self, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
        angle, keep = angles(target, pred)
        n = len(angle)
        below = [(keep & (angle < t)).sum((1, 2)) for t in THRESHOLDS]
        image = np.broadcast_to(np.arange(n)[:, None, None], keep.shape)[keep]
        bins = np.minimum((angle[keep] / WIDTH).astype(np.int64), BINS - 1)
        hist = np.bincount(image * BINS + bins, minlength=n * BINS).reshape(n, BINS)
        head = np.stack([keep.sum((1, 2)), np.where(keep, angle, 0.0).sum((1, 2)), *below], axis=1)
        return np.concatenate([head, hist], axis=1).astype(float)

    def compact(self, maps: np.ndarray, what: str) -> np.ndarray:
        maps = np.asarray(maps, dtype=np.float64)
        return (_normalised(maps) if what == "pred" else maps).astype(np.float16)

    # -- data --------------------------------------------------------------------------------------------------
    def check_targets(self, y: Any, where: str) -> None:
        y, name = np.asarray(y), self.task.name
        spatial_ok(y, 3, name, "normals", where, "unit normals (all zero: invalid pixel)")
        if not np.issubdtype(y.dtype, np.floating):
            raise BenchError(f"{where}: task {name!r} has normals of dtype {y.dtype}; give floats (e.g. "
                             ".astype(np.float32); all zero: invalid pixel)")
        norm = np.linalg.norm(np.where(np.isfinite(y), y, 0.0), axis=1)
        bad = valid_normals(y) & (np.abs(norm - 1) > UNIT_TOLERANCE)
        if bad.any():
            raise BenchError(f"{where}: task {name!r} has a normal of length {norm[bad].flat[0]:.4g} at "
                             f"{first_bad(bad)}; give unit vectors (divide by their norm; all zero: invalid pixel)")

    def unlabel(self, y: Any, idx: np.ndarray) -> np.ndarray:
        out = np.array(y, dtype=np.float32)
        out[idx] = 0.0
        return out

    def encode_targets(self, y: Any, encoded: dict[str, Any]) -> torch.Tensor:
        return torch.from_numpy(np.array(y, dtype=np.float32))


def _normalised(v: np.ndarray) -> np.ndarray:
    """Vectors along axis 1 divided by their length (a zero vector stays zero)."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 1e-12)


def angles(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angle error in degrees, valid) per pixel, (n, H, W) each: arccos of the clipped dot product of the
    normalised prediction and the target (as LibMTL's ``NormalMetric``), in float64."""
    t, p = np.asarray(target, dtype=np.float64), _normalised(np.asarray(pred, dtype=np.float64))
    keep = valid_normals(t)
    cos = np.clip((p * np.where(keep[:, None], t, 0.0)).sum(1), -1.0, 1.0)
    return np.degrees(np.arccos(cos)), keep
