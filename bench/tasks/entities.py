"""Entity-level scores of token tagging (NER, chunking) as per-sentence counts, scored exactly like conlleval.

Entity precision, recall and F1 are ratios of sums over a corpus (F1 = 2·TP / (n_pred + n_true), summed over the
sentences), not means of per-sentence scores. So a tagging task keeps, per sentence, the counts the ratios need
(:data:`STATS`): the number of predicted entity chunks that equal a gold chunk in type, start and end (``tp``), the
numbers of predicted and gold chunks, and the correct and labelled tokens. Summing the rows of any subset of sentences
and applying :data:`RECIPES` (``from_sums``) gives that subset's scores exactly, which is what makes resampling by
sentence (bootstrap, leave-one-out) exact and cheap.

Chunks are found by seqeval's ``get_entities`` in its default mode, which follows conlleval.pl's start/end-of-chunk
rules: an ``I-X`` after ``O`` or after another type starts a chunk (so IOB1 and IOB2 score alike), a change of type
ends one, and a sentence boundary ends every chunk (scoring each sentence alone is what conlleval does with its blank
lines). ``tests/test_entities.py`` checks the numbers against conlleval.pl's output on a fixture.

>>> gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O"]]
>>> pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-LOC"]]
>>> counts = sentence_counts(gold, pred)
>>> counts.tolist()
[[1.0, 2.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 0.0, 1.0]]
>>> {k: round(v, 4) for k, v in from_sums(counts.sum(axis=0)).items()}
{'entity_f1': 0.4, 'entity_precision': 0.3333, 'entity_recall': 0.5, 'token_accuracy': 0.6}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import BILOU, IOBES, Entities, Token

from bench.errors import BenchError
from bench.stats.ratios import Ratios

Chunk = tuple[str, int, int]  # (type, first token, last token + 1)

STATS: tuple[str, ...] = ("tp", "n_pred", "n_true", "tok_correct", "tok_total")

# metric -> recipe (bench.stats.ratios): the mean, over the ratios whose denominator sum is > 0, of Σnum / Σden
RECIPES: dict[str, dict[str, Any]] = {
    "entity_f1": {"ratios": [{"num": {"tp": 2}, "den": {"n_pred": 1, "n_true": 1}}], "bounds": [0, 1]},
    "entity_precision": {"ratios": [{"num": {"tp": 1}, "den": {"n_pred": 1}}], "bounds": [0, 1]},
    "entity_recall": {"ratios": [{"num": {"tp": 1}, "den": {"n_true": 1}}], "bounds": [0, 1]},
    "token_accuracy": {"ratios": [{"num": {"tok_correct": 1}, "den": {"tok_total": 1}}], "bounds": [0, 1]},
}

# IOB1 and IOB2 (BIO) use conlleval's rules (None); the schemes conlleval does not know use seqeval's strict mode,
# which drops a chunk that breaks the scheme (an I- with no B-) instead of repairing it
SCHEMES: dict[str, type[Token] | None] = {"IOB1": None, "IOB2": None, "BIO": None, "IOBES": IOBES, "BIOES": IOBES,
                                          "BILOU": BILOU}


def chunks(tags: Sequence[str], scheme: str = "IOB2") -> set[Chunk]:
    """The entity chunks of one sentence's tags, as ``(type, start, end)`` with ``end`` exclusive.

    >>> sorted(chunks(["I-ORG", "I-ORG", "B-ORG", "I-LOC", "O"]))  # IOB1-style start, then a type change
    [('LOC', 3, 4), ('ORG', 0, 2), ('ORG', 2, 3)]
    """
    if scheme not in SCHEMES:
        raise BenchError(f"unknown tagging scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    strict = SCHEMES[scheme]
    if strict is None:
        return {(kind, start, end + 1) for kind, start, end in get_entities(list(tags))}
    return {(e.tag, e.start, e.end) for e in Entities([list(tags)], strict).entities[0]}


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str = "IOB2") -> np.ndarray:
    """Per-sentence counts [n, 5] float64 in the order of :data:`STATS`."""
    _check_aligned(gold, pred)
    out = np.zeros((len(gold), len(STATS)))
    for i, (g, p) in enumerate(zip(gold, pred)):
        true, found = chunks(g, scheme), chunks(p, scheme)
        out[i] = (len(true & found), len(found), len(true), sum(a == b for a, b in zip(g, p)), len(g))
    return out


def entity_types(classes: Sequence[str]) -> list[str]:
    """The entity types named by a tag set, sorted as conlleval prints them.

    >>> entity_types(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    ['LOC', 'PER']
    """
    return sorted({tag.split("-", 1)[1] for tag in classes if "-" in tag})


def type_stats(types: Sequence[str]) -> tuple[str, ...]:
    """The per-type count columns, three per type: ``tp@T, n_pred@T, n_true@T``."""
    return tuple(f"{stat}@{kind}" for kind in types for stat in ("tp", "n_pred", "n_true"))


def type_recipes(types: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-type F1 recipes, named ``f1@T`` as the record's per-label metrics are."""
    return {f"f1@{kind}": {"ratios": [{"num": {f"tp@{kind}": 2}, "den": {f"n_pred@{kind}": 1, f"n_true@{kind}": 1}}],
                           "bounds": [0, 1]} for kind in types}


def type_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], types: Sequence[str],
                scheme: str = "IOB2") -> np.ndarray:
    """Per-sentence, per-type counts [n, 3·len(types)] float64 in the order of :func:`type_stats`; chunks of a type
    not in ``types`` count only in :func:`sentence_counts`."""
    _check_aligned(gold, pred)
    col = {kind: 3 * j for j, kind in enumerate(types)}
    out = np.zeros((len(gold), 3 * len(types)))
    for i, (g, p) in enumerate(zip(gold, pred)):
        true, found = chunks(g, scheme), chunks(p, scheme)
        for offset, group in ((0, true & found), (1, found), (2, true)):
            for kind, _, _ in group:
                if kind in col:
                    out[i, col[kind] + offset] += 1
    return out


def from_sums(sums: np.ndarray | Sequence[float], columns: Sequence[str] = STATS,
              recipes: Mapping[str, Mapping[str, Any]] = RECIPES) -> dict[str, float]:
    """Each recipe's metric from the column sums over a set of sentences (0 when no denominator is positive, as
    conlleval prints 0.00 for a precision with nothing found).

    >>> from_sums([0, 0, 3, 5, 5])["entity_f1"], from_sums([0, 0, 0, 0, 0])["token_accuracy"]
    (0.0, 0.0)
    """
    sums = np.asarray(sums, dtype=float)
    return {m: float(Ratios.parse(m, recipe, columns).of_sums(sums)) for m, recipe in recipes.items()}


def label_sequences(targets: Sequence[np.ndarray], preds: Sequence[np.ndarray],
                    classes: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Tag-id arrays (targets -1 = no label) to the tag strings of the labelled words, gold and predicted.

    Unlabelled words are dropped from both sequences before chunking, as the transformers token-classification
    examples drop their -100 positions, so a sentence's chunks are read over its labelled words only.

    >>> label_sequences([np.array([1, -1, 2])], [np.array([1, 0, 0])], ["O", "B-PER", "I-PER"])
    ([['B-PER', 'I-PER']], [['B-PER', 'O']])
    """
    _check_aligned(targets, preds)
    gold, pred = [], []
    for t, p in zip(targets, preds):
        t, p = np.asarray(t), np.asarray(p)
        keep = t >= 0
        for name, ids in (("target", t[keep]), ("prediction", p[keep])):
            bad = ids[(ids < 0) | (ids >= len(classes))]
            if bad.size:
                raise BenchError(f"{name} tag id {int(bad[0])} is outside 0..{len(classes) - 1}: ids index the "
                                 f"task's classes {list(classes)[:4]}...")
        gold.append([classes[i] for i in t[keep]])
        pred.append([classes[i] for i in p[keep]])
    return gold, pred


def _check_aligned(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> None:
    if len(gold) != len(pred):
        raise BenchError(f"{len(pred)} predicted sentences for {len(gold)} gold ones; pass one per sentence")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise BenchError(f"sentence {i}: {len(p)} predicted tags for {len(g)} gold ones; pass one tag per word")
