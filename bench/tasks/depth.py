"""``depth``: a depth per pixel (metres in NYUv2); 0 or NaN marks an invalid pixel, as in the MTAN/LibMTL data.

Loss: the L1 error over the valid pixels of the batch (LibMTL examples/nyu/utils.py ``DepthLoss``), an exact 0 when a
batch has none. Metrics as LibMTL's ``DepthMetric``: ``abs_err``, the mean |prediction − depth| over the valid pixels
of the split, and ``rel_err``, the mean of |prediction − depth| / depth over them. LibMTL averages per-batch means
weighted by each batch's valid-pixel count (``self.bs.append(pred.size()[0])`` after ``masked_select``), which is
Σ error / Σ valid pixels at any evaluation batch size: here it is that ratio of sums over the images, each image
storing its valid pixels and its two error sums (``valid``, ``abs_sum``, ``rel_sum``). LibMTL marks a pixel valid
when its depth is non-zero; a NaN depth, which LibMTL would count, is invalid here too.

The likelihood is Laplace (L1): uncertainty weighting gives it the e^{−s}·L + ½·s form of the non-Gaussian
likelihoods (bench/weighting/uncertainty.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bench.augment import Crop, crop_resize
from bench.errors import BenchError
from bench.tasks.base import register_task_kind
from bench.tasks.dense_base import VALID, DenseKind, first_bad


def valid_depth(depth: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Valid pixels: a finite, non-zero depth (torch or numpy)."""
    if isinstance(depth, torch.Tensor):
        return torch.isfinite(depth) & (depth != 0)
    return np.isfinite(depth) & (depth != 0)


@register_task_kind("depth")
class Depth(DenseKind):
    """A depth per pixel: L1 over valid pixels; absolute and relative error, pooled over the split's pixels."""

    metrics = {"abs_err": "min", "rel_err": "min"}
    likelihood = "laplace"

    @property
    def out_channels(self) -> int:
        return 1

    def stats_columns(self) -> list[str]:
        return [VALID, "abs_sum", "rel_sum"]

    def recipes(self) -> dict[str, dict[str, Any]]:
        # sums of non-negative errors over counts: the range [0, ∞) follows from the coefficients
        return {"abs_err": {"ratios": [{"num": {"abs_sum": 1}, "den": {VALID: 1}}]},
                "rel_err": {"ratios": [{"num": {"rel_sum": 1}, "den": {VALID: 1}}]}}

    # -- the model ---------------------------------------------------------------------------------------------
    def output(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, 0]  # (B, 1, H, W) -> (B, H, W), as the targets are encoded

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return valid_depth(target)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = valid_depth(target)
        gold = torch.where(mask, target, 0.0)  # NaN depths never reach the graph (0·NaN would poison the grad)
        err = torch.where(mask, (output.float() - gold.float()).abs(), 0.0)
        return err.sum() / mask.sum().clamp_min(1)

    def crop(self, target: torch.Tensor, crops: Sequence[Crop]) -> torch.Tensor:
        """Nearest depth divided by the scale (a crop zoomed s times looks s times nearer): the reference's
        ``depth_ / sc``; 0 and NaN (invalid) stay invalid."""
        scale = torch.tensor([c.scale for c in crops], dtype=target.dtype, device=target.device)
        return crop_resize(target[:, None], crops, "nearest")[:, 0].to(target.dtype) / scale[:, None, None]

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.float()

    # -- evaluation --------------------------------------------------------------------------------------------
    def image_stats(self, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
        t, p = _squeeze(np.asarray(target, dtype=np.float64)), np.asarray(pred, dtype=np.float64)
        keep = valid_depth(t)
        gold = np.where(keep, t, 1.0)
        err = np.where(keep, np.abs(p - gold), 0.0)
        return np.stack([keep.sum((1, 2)), err.sum((1, 2)), (err / gold).sum((1, 2))], axis=1).astype(float)

    def compact(self, maps: np.ndarray, what: str) -> np.ndarray:
        return _squeeze(np.asarray(maps)).astype(np.float16)

    # -- data --------------------------------------------------------------------------------------------------
    def check_targets(self, y: Any, where: str) -> None:
        y, name = np.asarray(y), self.task.name
        if not (y.ndim == 3 or (y.ndim == 4 and y.shape[1] == 1)):
            raise BenchError(f"{where}: task {name!r} has depth targets of shape {y.shape}; give (images, H, W) or "
                             "(images, 1, H, W) depths (0 or NaN: invalid pixel)")
        if not np.issubdtype(y.dtype, np.floating):
            raise BenchError(f"{where}: task {name!r} has depth targets of dtype {y.dtype}; give floats (e.g. "
                             ".astype(np.float32); 0 or NaN: invalid pixel)")
        y = _squeeze(y)
        bad = np.isinf(y) | (y < 0)
        if bad.any():
            raise BenchError(f"{where}: task {name!r} has depth {y[bad].flat[0]} at {first_bad(bad)}; a depth is "
                             "a finite number >= 0 (0 or NaN: invalid pixel); fix the source")

    def unlabel(self, y: Any, idx: np.ndarray) -> np.ndarray:
        out = _squeeze(np.array(y, dtype=np.float32))
        out[idx] = 0.0
        return out

    def encode_targets(self, y: Any, encoded: dict[str, Any]) -> torch.Tensor:
        return torch.from_numpy(_squeeze(np.array(y, dtype=np.float32)))


def _squeeze(y: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) -> (N, H, W); (N, H, W) unchanged."""
    return y[:, 0] if y.ndim == 4 else y
