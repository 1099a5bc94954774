"""A cross-modal backbone (``backbone: {source: crossmodal}``): modality encoders, projections to a common width, a
shared trunk; each task's head (built by its kind) reads the trunk's pooled output.

```yaml
backbone:
  source: crossmodal
  options:
    text: {source: transformers, name: minilm, max_length: 48}        # any backbone of a text source
    image: {source: timm, name: efficientnet_lite0, image_size: 64}   # any backbone of an image source
    width: 128              # the common width of the projections and the trunk
    trunk: transformer      # or mlp
    layers: 2               # trunk blocks (transformer) or hidden layers (mlp)
    encoders: frozen        # or train
    shared: trunk           # or all (the encoders too): what gradient-level aggregators balance
```

A task's ``input`` picks the encoders it runs through: ``text`` and ``text_pair`` the text encoder, ``image`` the
image encoder, ``image_text`` both. Each encoder's pooled vector is layer-normed and projected to ``width``
(a projection per modality) and becomes one token, plus a learned embedding of its modality; the ``transformer``
trunk (pre-norm blocks of self-attention and an MLP, every map an ``nn.Linear``, so RegMean merges them) attends over
the one or two tokens of an example and averages them; the ``mlp`` trunk reads the tokens side by side in fixed
slots (text, image), zeros where an example lacks a modality.

``encoders: frozen`` (default): the encoders never train, so their features are computed once per example when the
suite is encoded and cached with the other encodings (the preprocessor holds the encoders; its cache key names them
and a content hash of their weights). The module trains the projections and the trunk only; it keeps that hash as
a buffer, ``encoder_digest``, so θ0's content hash, and through it every stage key, still changes with the
encoders' weights. Fusion fuses what the module holds: every task model's encoders would be θ0's, a zero task
vector, which every fusion method leaves unchanged, so fusing without them is exact. ``encoders: train`` puts them
in the module (checkpoints then hold them; fusion merges them; a step costs their forward and backward).

``shared`` declares the parameters every task shares, the ones a gradient-level aggregator balances
(:meth:`Backbone.shared_parameters`): ``trunk`` (default) is everything past the encoders, the per-modality
projections included (an aggregator writes no gradient to a parameter outside the shared set and the heads, so a
projection left out would never train); ``all`` adds the encoders, and is what ``encoders: train`` needs (its
default there; ``shared: trunk`` with trained encoders is refused). GradNorm watches the trunk's last linear map.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.backbones.base import Backbone, Preprocessor, build_backbone, register_backbone
from bench.backbones.hf import last_linear
from bench.checkpoint import weights_hash
from bench.config import BackboneConfig, Frozen, InputKind, validated
from bench.errors import BenchError

MODALITIES = ("text", "image")  # the trunk's token slots, in this order
#: the encoders each input kind runs through
ROUTES: dict[str, tuple[str, ...]] = {"text": ("text",), "text_pair": ("text",), "image": ("image",),
                                      "image_text": ("image", "text")}


class Options(Frozen):
    """``backbone.options`` of a cross-modal backbone."""

    text: BackboneConfig | None = None
    image: BackboneConfig | None = None
    width: int = Field(128, ge=8)
    trunk: Literal["transformer", "mlp"] = "transformer"
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)  # attention heads of the transformer trunk
    encoders: Literal["frozen", "train"] = "frozen"
    shared: Literal["trunk", "all"] | None = None  # None: trunk with frozen encoders, all with trained ones


# -- the trunk -----------------------------------------------------------------------------------------------------
class Block(nn.Module):
    """A pre-norm transformer block with plain ``nn.Linear`` maps (q, k, v, output, MLP)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise BenchError(f"crossmodal width {width} is not a multiple of heads {heads}; change one of them")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))
        self.up, self.down = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        h = self.norm1(x)
        q, k, v = (m(h).view(b, n, self.heads, w // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        x = x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


def _trunk(opts: Options) -> nn.Module:
    w = opts.width
    if opts.trunk == "transformer":
        return nn.Sequential(*(Block(w, opts.heads) for _ in range(opts.layers)), nn.LayerNorm(w))
    layers: list[nn.Module] = []
    width_in = w * len(MODALITIES)
    for _ in range(opts.layers):
        layers += [nn.Linear(width_in, w), nn.GELU()]
        width_in = w
    return nn.Sequential(*layers)


class CrossModalBackbone(Backbone):
    """Encoders (``encoders: train``) or their cached features (``frozen``) -> projections -> trunk -> (B, width).

    ``forward`` takes the collated batch of any input kind: ``f_text`` / ``f_image`` (frozen features) or the
    encoders' own batches under ``text__`` / ``image__`` keys; which are present says which modalities run."""

    def __init__(self, opts: Options, dims: dict[str, int], encoders: dict[str, Backbone] | None, digest: bytes):
        super().__init__()
        self.opts = opts
        if encoders is not None:
            self.encoders = nn.ModuleDict(encoders)
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, opts.width))
                                   for m, d in dims.items()})
        self.modality = nn.Parameter(torch.zeros(len(MODALITIES), opts.width))
        nn.init.normal_(self.modality, std=0.02)
        self.trunk = _trunk(opts)
        self.register_buffer("encoder_digest", torch.tensor(list(digest), dtype=torch.uint8))
        self.out_dim = opts.width
        self.shared_layer = "trunk." + last_linear(self.trunk)

    def shared_parameters(self) -> list[nn.Parameter]:
        """``shared: trunk``: projections, modality embeddings and trunk; ``all``: the encoders too."""
        own = [p for n, p in self.named_parameters() if not n.startswith("encoders.") and p.requires_grad]
        if self.opts.shared == "all" and "encoders" in self._modules:
            own += [p for e in self.encoders.values() for p in e.shared_parameters()]
        return own

    def _features(self, m: str, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if f"f_{m}" in batch:
            return batch[f"f_{m}"]
        own = {k[len(m) + 2:]: v for k, v in batch.items() if k.startswith(f"{m}__")}
        return self.encoders[m](**own) if own else None

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        feats = {m: self._features(m, batch) for m in MODALITIES if m in self.proj}
        tokens = {m: self.proj[m](f.to(self.modality.dtype)) + self.modality[MODALITIES.index(m)]
                  for m, f in feats.items() if f is not None}
        if not tokens:
            raise BenchError(f"crossmodal backbone got a batch with none of its inputs ({', '.join(batch)})")
        if self.opts.trunk == "mlp":
            like = next(iter(tokens.values()))
            slots = [tokens.get(m, torch.zeros_like(like)) for m in MODALITIES]
            return self.trunk(torch.cat(slots, dim=-1))
        return self.trunk(torch.stack(list(tokens.values()), dim=1)).mean(dim=1)


# -- preprocessing -------------------------------------------------------------------------------------------------
def _split_inputs(kind: str, inputs: Any) -> dict[str, Any]:
    """Raw inputs of one input kind -> the raw inputs of each encoder it runs through."""
    if kind == "image_text":
        items = list(inputs)
        return {"image": np.stack([np.asarray(i) for i, _ in items]) if items else np.zeros((0, 1, 1), np.uint8),
                "text": [str(t) for _, t in items]}
    return {ROUTES[kind][0]: inputs}


class CrossModalPreprocessor(Preprocessor):
    """Each encoder's own preprocessor under its modality's key prefix; frozen encoders run here, once, and their
    features (``f_text``, ``f_image``) are what is cached. :meth:`for_input` gives one input kind's view."""

    def __init__(self, pres: dict[str, Preprocessor], encoders: dict[str, Backbone] | None, key: str,
                 kind: str | None = None, batch_size: int = 64):
        self.pres, self.encoders, self.kind, self.batch_size = pres, encoders, kind, batch_size
        self.base_key = key
        self.key = f"{key}:{kind}" if kind else key

    def for_input(self, kind: InputKind) -> Preprocessor:
        if kind not in ROUTES:
            raise BenchError(f"crossmodal backbone: input {kind!r} has no encoder here; it takes "
                             f"{', '.join(ROUTES)} inputs")
        missing = [m for m in ROUTES[kind] if m not in self.pres]
        if missing:
            raise BenchError(f"crossmodal backbone: input {kind!r} needs the {missing[0]} encoder; declare "
                             f"backbone.options.{missing[0]}")
        return CrossModalPreprocessor(self.pres, self.encoders, self.base_key, kind, self.batch_size)

    def encode(self, inputs: Any) -> dict[str, Any]:
        if self.kind is None:
            raise BenchError("crossmodal preprocessor: encode through for_input(kind), one input kind at a time")
        out: dict[str, Any] = {}
        for m, raw in _split_inputs(self.kind, inputs).items():
            enc = self.pres[m].encode(raw)
            if self.encoders is None:
                out.update({f"{m}__{k}": v for k, v in enc.items()})
            else:
                out[f"f_{m}"] = self._run(m, enc, len(raw))
        return out

    @torch.no_grad()
    def _run(self, m: str, enc: dict[str, Any], n: int) -> torch.Tensor:
        """A frozen encoder's pooled features of every example, in batches, in eval mode, in fp32 on the CPU."""
        assert self.encoders is not None
        enc_m = self.encoders[m].eval()
        rows = [enc_m(**self.pres[m].collate(enc, np.arange(i, min(i + self.batch_size, n))))
                for i in range(0, n, self.batch_size)]
        return torch.cat(rows).float().contiguous() if rows else torch.zeros(0, enc_m.out_dim)

    def collate(self, encoded: dict[str, Any], idx: np.ndarray) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        rows = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        for m in MODALITIES:
            if f"f_{m}" in encoded:
                batch[f"f_{m}"] = encoded[f"f_{m}"][rows]
            own = {k[len(m) + 2:]: v for k, v in encoded.items() if k.startswith(f"{m}__")}
            if own:
                batch.update({f"{m}__{k}": v for k, v in self.pres[m].collate(own, idx).items()})
        return batch

    def lengths(self, encoded: dict[str, Any]) -> np.ndarray | None:
        own = {k[6:]: v for k, v in encoded.items() if k.startswith("text__")}
        return self.pres["text"].lengths(own) if own else None


# -- the factory ---------------------------------------------------------------------------------------------------
_FROZEN: dict[str, tuple[Backbone, Preprocessor, str]] = {}  # frozen encoders, loaded once per process


def _encoder(m: str, cfg: BackboneConfig, frozen: bool) -> tuple[Backbone, Preprocessor, str]:
    """(module, preprocessor, weights digest) of one modality's encoder; frozen ones are loaded once per process."""
    memo = json.dumps([m, cfg.model_dump(mode="json")], sort_keys=True)
    if frozen and memo in _FROZEN:
        return _FROZEN[memo]
    sample = np.zeros((1, 8, 8), dtype=np.uint8) if m == "image" else ["a"]
    module, pre = build_backbone(cfg, "image" if m == "image" else "text", sample)
    out = (module, pre, weights_hash(module) if frozen else "")
    if frozen:
        for p in module.parameters():
            p.requires_grad_(False)
        _FROZEN[memo] = out
    return out


@register_backbone("crossmodal")
def build_crossmodal(cfg: BackboneConfig, input_kind: str, sample: Any) -> tuple[Backbone, Preprocessor]:
    """Modality encoders (options text, image) + projections + a shared trunk; see the module docstring.

    ``input_kind`` and ``sample`` are the first task's; every task's kind is routed by :meth:`for_input`."""
    opts = validated(Options, cfg.options, "backbone.options")
    if opts.shared is None:
        opts = opts.model_copy(update={"shared": "trunk" if opts.encoders == "frozen" else "all"})
    if opts.encoders == "train" and opts.shared == "trunk":
        raise BenchError("crossmodal encoders: train with shared: trunk would leave the encoders without an update "
                         "from gradient aggregators; use shared: all (the default with trained encoders)")
    declared = {m: c for m, c in (("text", opts.text), ("image", opts.image)) if c is not None}
    if not declared:
        raise BenchError("crossmodal backbone declares no encoder; set backbone.options.text and/or .image, e.g. "
                         "text: {source: transformers, name: minilm}")
    frozen = opts.encoders == "frozen"
    built = {m: _encoder(m, c, frozen) for m, c in declared.items()}
    modules = {m: b[0] for m, b in built.items()}
    pres = {m: b[1] for m, b in built.items()}
    digest = "|".join(f"{m}={b[2]}" for m, b in sorted(built.items()))
    key = "crossmodal:" + ("frozen:" + digest if frozen else "train") + ":" + \
        ",".join(f"{m}={p.key}" for m, p in sorted(pres.items()))
    dims = {m: int(e.out_dim) for m, e in modules.items()}
    raw = hashlib.blake2b(digest.encode(), digest_size=16).digest() if frozen else bytes(16)
    backbone = CrossModalBackbone(opts, dims, None if frozen else modules, raw)
    return backbone, CrossModalPreprocessor(pres, modules if frozen else None, key)
