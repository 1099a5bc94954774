"""``token_classification``: a tag per word (NER, chunking, POS), a linear head on every token state.

Words arrive pre-split (``input: words``); the preprocessor tokenises them into sub-words and marks which token
starts which word. As in the transformers token-classification examples, a word's label goes on its first sub-word
and every other sub-word (and special token) is masked out of the loss, and the prediction for a word is read at its
first sub-word. A word whose label is -1 is unlabelled (partial labels at token granularity): it is masked too.
Words past ``backbone.max_length`` tokens are cut off by the tokenizer: they are not trained, but they are scored, as
words the model left untagged (their gold entities count as missed, their tokens as wrong), so a short
``max_length`` cannot raise a score (docs/suites.md says how many words each tagging suite loses).

Metrics: entity precision, recall and F1 over chunks exactly as conlleval counts them, for BIO/IOB2 tag sets
(:mod:`bench.tasks.entities`), and token accuracy (POS-style tag sets, which name no chunks, get token accuracy only).
``predictions.npz`` keeps per-sentence counts, not tags or logits: ``stats`` = [tp, n_pred, n_true, tok_correct,
tok_total] plus three counts per entity type, so that every metric of any resample of sentences is a ratio of sums.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.tasks import entities as E
from bench.tasks.base import Kept, TaskKind, register_task_kind

IGNORE = -100  # a position no word label sits on (later sub-words, special tokens, padding)
CUT = -200  # marks the column after which the tags of words cut off by max_length follow (scored, never trained)
PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")


def is_chunk_tag_set(classes: list[str]) -> bool:
    """Whether the tags name entity chunks (O plus B-/I-/... prefixed types), as NER and chunking tag sets do."""
    return "O" in classes and all(c == "O" or c.startswith(PREFIXES) for c in classes)


@register_task_kind("token_classification")
class TokenClassification(TaskKind):
    """A tag per word: linear head on token states, first sub-word labelled; entity P/R/F1 (conlleval) and
    token accuracy."""

    metrics = {"entity_f1": "max", "entity_precision": "max", "entity_recall": "max", "token_accuracy": "max"}
    reads = "tokens"
    likelihood = "categorical"
    unit = "token"

    @property
    def classes(self) -> list[str]:
        return list(self.task.classes or [])

    @property
    def chunked(self) -> bool:
        return is_chunk_tag_set(self.classes)

    @property
    def metric_names(self) -> list[str]:
        if self.task.metrics:
            return list(self.task.metrics)
        return list(self.metrics) if self.chunked else ["token_accuracy"]

    def validate(self) -> None:
        t = self.task
        if not t.classes:
            raise BenchError(f"task {t.name!r}: a token_classification task needs classes: [its tags in id order], "
                             "e.g. [O, B-PER, I-PER]")
        if t.input != "words":
            raise BenchError(f"task {t.name!r}: token_classification reads pre-split words; set input: words")
        entity = [m for m in self.metric_names if m.startswith("entity_")]
        if entity and not self.chunked:
            raise BenchError(f"task {t.name!r}: metric {entity[0]!r} needs BIO/IOB2 tags (O, B-X, I-X), but its "
                             f"classes are {self.classes[:4]}...; use metrics: [token_accuracy]")

    def _types(self) -> list[str]:
        return E.entity_types(self.classes) if self.chunked else []

    def extra_metrics(self) -> list[str]:
        return [f"f1@{t}" for t in self._types()]

    def direction(self, metric: str) -> str:
        return "max"  # every tagging metric is a rate of correct chunks or tokens

    def record_spec(self) -> dict[str, Any]:
        types = self._types()
        recipes = {m: E.RECIPES[m] for m in self.metric_names} | E.type_recipes(types)
        return {"stats": [*E.STATS, *E.type_stats(types)], "recipes": recipes}

    # -- the model ---------------------------------------------------------------------------------------------
    def head(self, dim: int) -> nn.Module:
        return nn.Linear(dim, len(self.classes))

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target[:, : output.shape[1]]  # the batch is padded to its longest row, the targets further
        target = torch.where(target >= 0, target, IGNORE)
        count = (target != IGNORE).sum().clamp_min(1)
        return F.cross_entropy(output.float().reshape(-1, output.shape[-1]), target.reshape(-1),
                               ignore_index=IGNORE, reduction="sum") / count

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        return (target >= 0).any(-1)

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(-1)

    def assemble(self, pieces: list[tuple[np.ndarray, torch.Tensor]], n: int) -> np.ndarray:
        width = max(p.shape[1] for _, p in pieces)
        out = np.full((n, width), IGNORE, dtype=np.int64)
        for idx, pred in pieces:
            out[idx, : pred.shape[1]] = pred.cpu().numpy()
        return out

    def score(self, target: np.ndarray, pred: np.ndarray, fitted: dict[str, Any] | None = None,
              ) -> tuple[dict[str, float], Kept]:
        marker = np.flatnonzero((target == CUT).all(axis=0)) if len(target) else np.zeros(0, dtype=int)
        tokens, cut = (target[:, : marker[0]], target[:, marker[0] + 1:]) if marker.size else (target, None)
        width = min(tokens.shape[1], pred.shape[1])
        starts = tokens[:, :width] != IGNORE  # first sub-words (label -1: an unlabelled word, dropped in scoring)
        gold, guess = E.label_sequences([t[s] for t, s in zip(tokens[:, :width], starts)],
                                        [p[s] for p, s in zip(pred[:, :width], starts)], self.classes)
        types = self._types()
        missed = np.zeros(len(target))  # tokens cut off by max_length: scored as wrong
        if cut is not None:  # words past max_length: gold tags the model never tagged ("O" makes no chunk)
            for i, row in enumerate(cut):
                extra = [self.classes[j] for j in row[row >= 0]]
                gold[i], guess[i] = gold[i] + extra, guess[i] + ["O" if types else ""] * len(extra)
                missed[i] = sum(g == "O" for g in extra) if types else 0
        stats = E.sentence_counts(gold, guess) if types else _token_counts(gold, guess)
        stats[:, E.STATS.index("tok_correct")] -= missed  # an "O" placeholder is not a right tag
        if types:
            stats = np.concatenate([stats, E.type_counts(gold, guess, types)], axis=1)
        values = self.ratio_values(stats)
        metrics = {m: values[m] for m in [*self.metric_names, *self.extra_metrics()]}
        gold_cols = [E.STATS.index("n_true"), E.STATS.index("tok_total")]
        pred_cols = [E.STATS.index("tp"), E.STATS.index("n_pred"), E.STATS.index("tok_correct")]
        return metrics, {"id": np.arange(len(target), dtype=np.int64), "target": stats[:, gold_cols],
                         "pred": stats[:, pred_cols], "stats": stats}

    # -- data --------------------------------------------------------------------------------------------------
    def check_targets(self, y: Any, where: str) -> None:
        k = len(self.classes)
        for i, tags in enumerate(y):
            tags = np.asarray(tags)
            if tags.size and (not np.issubdtype(tags.dtype, np.integer) or tags.min() < -1 or tags.max() >= k):
                bad = tags[(tags < -1) | (tags >= k)] if np.issubdtype(tags.dtype, np.integer) else tags
                raise BenchError(f"{where}: example {i} of task {self.task.name!r} has tag {bad.flat[0]!r}, not an "
                                 f"id 0..{k - 1} of its classes (or -1, unlabelled); fix the source or classes:")

    def unlabel(self, y: Any, idx: np.ndarray) -> np.ndarray:
        out = np.array(y, dtype=object)
        for i in idx:
            out[i] = np.full(len(out[i]), -1, dtype=np.int64)
        return out

    def check_inputs(self, inputs: Any, y: Any, where: str) -> None:
        for i, (words, tags) in enumerate(zip(inputs, y)):
            if len(tags) and len(tags) != len(words):
                raise BenchError(f"{where}: example {i} of task {self.task.name!r} has {len(tags)} tags for "
                                 f"{len(words)} words; give one tag per word (or none: an unlabelled sentence)")

    def from_column(self, values: Any, names: list[str] | None, where: str) -> np.ndarray:
        import pandas as pd

        ids = {n: i for i, n in enumerate(names or self.classes)}
        out = np.empty(len(values), dtype=object)
        for i, cell in enumerate(values):
            if not isinstance(cell, (list, tuple, np.ndarray)) and pd.isna(cell):
                out[i] = np.zeros(0, dtype=np.int64)  # a blank cell: the whole sentence is unlabelled
                continue
            tags = [str(t) for t in cell] if isinstance(cell, (list, tuple, np.ndarray)) else str(cell).split()
            bad = [t for t in tags if t not in ids and t != "_"]
            if bad:
                raise BenchError(f"{where}: tag {bad[0]!r} (row {i}) is not one of task {self.task.name!r}'s "
                                 f"classes; add it to classes: or fix the row")
            out[i] = np.array([ids.get(t, -1) for t in tags], dtype=np.int64)  # "_": this word is unlabelled
        return out

    def encode_targets(self, y: Any, encoded: dict[str, Any]) -> torch.Tensor:
        """Word labels on first sub-words, [N, longest row] with :data:`IGNORE` elsewhere; when max_length cut words
        off, a :data:`CUT` column follows, then the tags of the words cut off (past every row's tokens, so no batch's
        loss reads them: a batch is never longer than its longest row)."""
        offsets, starts = encoded["offsets"], encoded.get("word_ids")
        if starts is None:
            raise BenchError(f"task {self.task.name!r}: the preprocessor kept no word boundaries; "
                             "token_classification needs input: words and a transformers backbone")
        lengths = np.diff(offsets)
        width = int(lengths.max(initial=1))
        rows, cuts = [], []
        for i, tags in enumerate(y):
            tags = np.asarray(tags, dtype=np.int64)
            row = starts[offsets[i]: offsets[i + 1]]
            at = np.flatnonzero(row >= 0)
            words = row[at]
            if tags.size == 0:  # unlabelled sentence
                rows.append((at, np.full(at.size, -1, dtype=np.int64)))
                cuts.append(tags)
                continue
            if words.size and words.max() >= tags.size:
                raise BenchError(f"task {self.task.name!r}: example {i} has {tags.size} tags for more words; "
                                 "give one tag per word")
            rows.append((at, tags[words]))
            cuts.append(tags[int(words.max()) + 1 if words.size else 0:])
        extra = max((c.size for c in cuts), default=0)
        out = np.full((len(lengths), width + (1 + extra if extra else 0)), IGNORE, dtype=np.int64)
        for i, ((at, tags), cut) in enumerate(zip(rows, cuts)):
            out[i, at] = tags
            if extra:
                out[i, width] = CUT
                out[i, width + 1: width + 1 + cut.size] = cut
        return torch.from_numpy(out)


def _token_counts(gold: list[list[str]], pred: list[list[str]]) -> np.ndarray:
    """Per-sentence [0, 0, 0, correct, total] for tag sets without chunks (POS): token accuracy only."""
    out = np.zeros((len(gold), len(E.STATS)))
    for i, (g, p) in enumerate(zip(gold, pred)):
        out[i, 3] = sum(a == b for a, b in zip(g, p))
        out[i, 4] = len(g)
    return out
