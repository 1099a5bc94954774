"""Decoders of the dense kinds: feature maps in, one map of K channels per image out, at the input's resolution.

A dense kind's head is one of these, built on the ``maps`` view's channels (:class:`~bench.backbones.base.ViewShape`)
and holding only that task's parameters; its forward takes a :class:`~bench.backbones.base.FeatureMaps` and returns
(B, K, H, W) at ``maps.size``, upsampled bilinearly at the end (``align_corners=True``, as LibMTL's NYUv2 heads).

* ``fpn`` (default): a light feature pyramid (Lin et al., CVPR 2017): a 1×1 lateral conv per map to ``width``
  channels, a top-down pass that upsamples the deeper sum and adds it, one 3×3 conv (GroupNorm, ReLU) on the finest
  level and a 1×1 conv to K. GroupNorm, not BatchNorm: its output does not depend on the batch, so a head behaves
  the same in a batch of one (Fisher merging) and in one the size of a step.
* ``aspp``: the DeepLab-v3 head of LibMTL's NYUv2 example (LibMTL/model/decoder/DeepLabHead.py: ``DeepLabHead`` =
  ASPP with rates 12, 24, 36 on the deepest map, 256 channels, a 1×1 branch and an image-pooling branch, a 1×1
  projection with BatchNorm, ReLU and dropout 0.5, then a 3×3 conv, BatchNorm, ReLU and a 1×1 conv to K). LibMTL
  reads the deepest map of a dilated ResNet-50 (stride 8); here it reads whatever the backbone's deepest map is.
  Like LibMTL's, its image-pooling branch has BatchNorm on a 1×1 map, which needs more than one image per training
  batch.

The choice and its options (``DecoderParams``) come from the task's ``head:`` mapping when the configuration has
one (``{decoder: aspp}``, ``{width: 64}``, ``{bias: 5.0}``); otherwise ``fpn`` at its defaults. ``bias`` starts the
output at a typical value: a depth head predicting metres from 0 spends its first hundreds of steps climbing to the
scale of the targets (Adam moves each weight by about the learning rate per step), which a short run cannot afford.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError
from torch import nn

from bench.backbones.base import FeatureMaps, ViewShape
from bench.config import Frozen
from bench.errors import BenchError

WIDTH = {"fpn": 32, "aspp": 256}  # channels inside the decoder when ``width`` is not given (aspp: LibMTL's)


class DecoderParams(Frozen):
    """A dense head's options: which decoder, its inner width (None: :data:`WIDTH`), and ASPP's atrous rates."""

    decoder: Literal["fpn", "aspp"] = "fpn"
    width: int | None = Field(None, ge=1)
    rates: tuple[int, int, int] = (12, 24, 36)
    bias: float = 0.0  # the output conv's initial bias: a typical depth, so a short run need not climb to the scale


def decoder_params(task: Any) -> DecoderParams:
    """The task's decoder options (its ``head:`` mapping when the configuration has one), validated in one line."""
    given = getattr(task, "head", None) or {}
    try:
        return DecoderParams.model_validate(given)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "head"
        raise BenchError(f"task {task.name!r}: head option {where!r}: {err['msg']} (got {given!r}); options are "
                         f"decoder (fpn|aspp), width, rates, bias") from None


def build_decoder(params: DecoderParams, shape: ViewShape, out_channels: int) -> nn.Module:
    """The decoder ``params`` names, on maps of ``shape.channels``, with ``out_channels`` outputs per pixel."""
    width = params.width or WIDTH[params.decoder]
    if params.decoder == "aspp":
        head: nn.Module = DeepLabHead(shape.channels[-1], out_channels, width, params.rates)
    else:
        head = FPNHead(shape.channels, out_channels, width)
    if params.bias:
        with torch.no_grad():
            head.output.bias.fill_(params.bias)
    return head


def _to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` resized bilinearly to ``size`` (corners aligned, as LibMTL's heads); unchanged when it already is."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class FPNHead(nn.Module):
    """Lateral 1×1 convs, a top-down sum, a 3×3 smoothing conv on the finest level, a 1×1 conv to the outputs."""

    def __init__(self, channels: tuple[int, ...], out_channels: int, width: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        groups = 8 if width % 8 == 0 else 1
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.GroupNorm(groups, width),
                                    nn.ReLU())
        self.output = nn.Conv2d(width, out_channels, 1)

    def forward(self, maps: FeatureMaps) -> torch.Tensor:
        x = self.lateral[-1](maps.maps[-1])
        for lateral, m in zip(reversed(self.lateral[:-1]), reversed(maps.maps[:-1])):
            # the deeper level upsampled to this one's exact size (odd sizes do not halve evenly)
            x = lateral(m) + F.interpolate(x, size=m.shape[-2:], mode="bilinear", align_corners=False)
        return _to_size(self.output(self.smooth(x)), maps.size)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three dilated 3×3 and an image-pooling branch, projected to ``width``."""

    def __init__(self, cin: int, width: int, rates: tuple[int, int, int]):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(*_conv_bn_relu(cin, width, 1)),
                                       *(nn.Sequential(*_conv_bn_relu(cin, width, 3, r)) for r in rates)])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, width, 1))
        self.project = nn.Sequential(*_conv_bn_relu(5 * width, width, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([*(b(x) for b in self.branches), pooled], dim=1))


class DeepLabHead(nn.Module):
    """LibMTL's NYUv2 decoder: ASPP on the deepest map, a 3×3 conv, a 1×1 conv to the outputs, then upsampled."""

    def __init__(self, cin: int, out_channels: int, width: int, rates: tuple[int, int, int]):
        super().__init__()
        self.body = nn.Sequential(ASPP(cin, width, rates), *_conv_bn_relu(width, width, 3))
        self.output = nn.Conv2d(width, out_channels, 1)

    def forward(self, maps: FeatureMaps) -> torch.Tensor:
        return _to_size(self.output(self.body(maps.maps[-1])), maps.size)
