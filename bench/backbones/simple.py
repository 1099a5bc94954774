"""Small from-scratch backbones for synthetic suites and fast tests: ``mlp`` (vectors) and ``cnn`` (images)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bench.backbones.base import Backbone, FeatureMaps, Preprocessor, register_backbone
from bench.config import BackboneConfig
from bench.errors import BenchError


class ArrayPreprocessor(Preprocessor):
    """Stores inputs as one float tensor; images get a channel axis and are scaled to [0, 1] when uint8."""

    def __init__(self, key: str, image: bool = False):
        self.key = key
        self.image = image

    def encode(self, inputs: Any) -> dict[str, Any]:
        x = np.asarray(inputs)
        if self.image:
            if x.ndim == 3:
                x = x[:, None]
            x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        return {"x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))}

    def collate(self, encoded: dict[str, Any], idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {"x": encoded["x"][torch.as_tensor(idx)]}


class MLP(Backbone):
    def __init__(self, in_dim: int, hidden: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.body = nn.Sequential(*layers)
        self.out_dim = hidden
        self.shared_layer = f"body.{2 * depth - 2}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SmallCNN(Backbone):
    """Three conv blocks and a pooled feature (≈ 900 img/s train at 28 px on 2 cores)."""

    def __init__(self, in_ch: int, width: int):
        super().__init__()
        c = width
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.BatchNorm2d(4 * c), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_dim = 4 * c
        self.shared_layer = "body.8"
        self.outputs = ("pooled", "maps")
        self.map_channels, self.map_strides = (c, 2 * c, 4 * c), (1, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def features(self, x: torch.Tensor) -> dict[str, object]:
        """The pooled vector and the three blocks' maps (before each pooling), from one pass."""
        maps, h = [], x
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i in (2, 6, 10):  # each block's ReLU: strides 1, 2, 4
                maps.append(h)
        return {"pooled": h, "maps": FeatureMaps(tuple(maps), (int(x.shape[-2]), int(x.shape[-1])))}


@register_backbone("mlp")
def build_mlp(cfg: BackboneConfig, input_kind: str, sample: Any) -> tuple[Backbone, Preprocessor]:
    """A ReLU MLP over vector inputs (options: hidden=64, depth=2)."""
    if input_kind != "vector":
        raise BenchError(f"backbone 'mlp' takes vector inputs, not {input_kind!r}; "
                         "use source: cnn, timm or transformers")
    in_dim = int(np.asarray(sample).reshape(len(sample), -1).shape[1])
    hidden, depth = int(cfg.options.get("hidden", 64)), int(cfg.options.get("depth", 2))
    return MLP(in_dim, hidden, depth), ArrayPreprocessor(f"array:{in_dim}")


@register_backbone("cnn")
def build_cnn(cfg: BackboneConfig, input_kind: str, sample: Any) -> tuple[Backbone, Preprocessor]:
    """A 3-conv CNN from scratch for small grayscale or RGB images (options: width=16)."""
    if input_kind != "image":
        raise BenchError(f"backbone 'cnn' takes image inputs, not {input_kind!r}")
    arr = np.asarray(sample)
    in_ch = 1 if arr.ndim == 3 else int(arr.shape[1])
    return SmallCNN(in_ch, int(cfg.options.get("width", 16))), ArrayPreprocessor(f"image:{arr.shape[1:]}", image=True)
