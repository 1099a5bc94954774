"""What the dense kinds (``segmentation``, ``depth``, ``normals``) share: a label map per image, a decoder head on
the backbone's feature maps, losses averaged over the labelled pixels, and metrics pooled over every labelled pixel
of a split, kept as per-image sufficient statistics.

Every metric of a dense kind is a ratio of sums over the pixels of a split (or, the median angle, the median of the
pooled pixel values), as LibMTL's NYUv2 metrics are: not a mean of per-image scores. So ``predictions.npz`` keeps, per
image, the counts and sums those need (``stats``, columns named by :meth:`DenseKind.stats_columns`), and the report
recomputes and resamples every metric by image from them (:mod:`bench.stats.ratios`). ``target`` keeps each image's
number of labelled pixels and ``pred`` the primary metric on that image alone (for reading, never averaged), and
``preview_target`` / ``preview_pred`` the first :attr:`~DenseKind.preview` images' maps (compact dtypes) for the
report's figure. Full maps are never kept.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bench.backbones.base import ViewShape
from bench.errors import BenchError
from bench.stats.ratios import recipes_of
from bench.tasks.base import Kept, TaskKind
from bench.tasks.decoders import build_decoder, decoder_params

CHUNK = 16  # images scored at once: bounds the float64 per-pixel temporaries (NYUv2: 16 × 288 × 384 pixels)
VALID = "valid"  # the stats column every dense kind has: labelled pixels of the image


class DenseKind(TaskKind):
    """A map per image: a decoder on the ``maps`` view, per-pixel losses over labelled pixels, pooled metrics."""

    reads = "maps"
    unit = "pixel"
    preview: ClassVar[int] = 4  # images whose maps the report's figure shows (contract: kept as preview_*)

    # -- what a kind defines -----------------------------------------------------------------------------------
    @property
    @abstractmethod
    def out_channels(self) -> int:
        """Output channels of the head: K classes, 1 depth, 3 normal components."""

    @abstractmethod
    def valid(self, target: torch.Tensor) -> torch.Tensor:
        """A bool per pixel (B, H, W): whether it carries a label."""

    @abstractmethod
    def stats_columns(self) -> list[str]:
        """Names of the per-image stats columns (the first is :data:`VALID`)."""

    @abstractmethod
    def recipes(self) -> dict[str, dict[str, Any]]:
        """Metric -> its recipe over :meth:`stats_columns` (:mod:`bench.stats.ratios`)."""

    @abstractmethod
    def image_stats(self, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Per-image stats [n, k] of a few images' targets and predictions (as :meth:`score` gets them)."""

    @abstractmethod
    def compact(self, maps: np.ndarray, what: str) -> np.ndarray:
        """``maps`` ("target" or "pred") of the preview images in a compact dtype, as the figure draws them."""

    # -- configuration -----------------------------------------------------------------------------------------
    def validate(self) -> None:
        decoder_params(self.task)
        unknown = [m for m in self.metric_names if m not in self.metrics]
        if unknown:
            raise BenchError(f"task {self.task.name!r}: metric {unknown[0]!r} is not a {self.name} metric "
                             f"({', '.join(self.metrics)}); fix metrics: in the suite")

    def record_spec(self) -> dict[str, Any]:
        recipes = self.recipes()
        return {"stats": self.stats_columns(), "recipes": {m: recipes[m] for m in self.metric_names}}

    # -- the model ---------------------------------------------------------------------------------------------
    def head(self, dim: int) -> nn.Module:
        raise BenchError(f"task {self.task.name!r}: a {self.name} task reads feature maps, not a vector of width "
                         f"{dim}; use a backbone that offers maps (timm, cnn)")

    def build_head(self, shape: ViewShape) -> nn.Module:
        if not shape.channels:
            raise BenchError(f"task {self.task.name!r}: a {self.name} task reads feature maps, but the backbone "
                             "offers none; use a backbone that offers maps (timm, cnn)")
        return build_decoder(decoder_params(self.task), shape, self.out_channels)

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        return self.valid(target).flatten(1).any(1)

    # -- evaluation --------------------------------------------------------------------------------------------
    def score(self, target: np.ndarray, pred: np.ndarray, fitted: dict[str, Any] | None = None,
              ) -> tuple[dict[str, float], Kept]:
        n = len(target)
        parts = [self.image_stats(target[s:s + CHUNK], pred[s:s + CHUNK]) for s in range(0, n, CHUNK)]
        stats = np.concatenate(parts) if parts else np.zeros((0, len(self.stats_columns())))
        values = self.ratio_values(stats)
        primary = recipes_of({"stats": self.stats_columns(), "recipes": {"p": self.recipes()[self.primary]}})["p"]
        return {m: values[m] for m in self.metric_names}, {
            "id": np.arange(n, dtype=np.int64),
            "target": stats[:, 0].astype(np.int64),  # labelled pixels per image: the same for every row
            "pred": primary.of_sums(stats) if n else np.zeros(0),  # the primary metric on each image alone
            "stats": stats,
            "preview_target": self.compact(target[: self.preview], "target"),
            "preview_pred": self.compact(pred[: self.preview], "pred"),
        }

    # -- data --------------------------------------------------------------------------------------------------
    def check_inputs(self, inputs: Any, y: Any, where: str) -> None:
        """Images and label maps of one size: the head predicts at the input's size."""
        x, y = inputs, np.asarray(y)
        if isinstance(x, np.ndarray) and x.ndim == 4 and y.ndim >= 3 and x.shape[-2:] != y.shape[-2:]:
            raise BenchError(f"{where}: task {self.task.name!r} has {y.shape[-2]}x{y.shape[-1]} label maps for "
                             f"{x.shape[-2]}x{x.shape[-1]} images; give maps at the images' size")


def first_bad(bad: np.ndarray) -> str:
    """Where the first True of a per-pixel mask is, as ``image i, pixel (y, x)``."""
    at = np.argwhere(bad)[0]
    return f"image {at[0]}, pixel ({at[-2]}, {at[-1]})"


def spatial_ok(y: np.ndarray, channels: int | None, task: str, kind: str, where: str, what: str) -> None:
    """Refuse targets that are not (images, H, W) — or (images, channels, H, W) when ``channels`` is given."""
    ok = y.ndim == 4 and y.shape[1] == channels if channels else y.ndim == 3
    if not ok:
        shape = f"(images, {channels}, H, W)" if channels else "(images, H, W)"
        raise BenchError(f"{where}: task {task!r} has {kind} targets of shape {y.shape}; give {shape} {what}")
