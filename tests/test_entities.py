"""Entity-level tagging scores (bench/tasks/entities.py) against conlleval.pl, seqeval, and hand counts.

The fixture ``tests/fixtures/conlleval/input.txt`` is 33 hand-written NER sentences (183 tokens, one
``word gold pred`` line per token, sentences separated by a blank line) with the cases where chunk rules differ: an
``I-`` with no ``B-`` before it (IOB1-style, in gold and in predictions), a type change inside a chunk, adjacent
chunks of one type, chunks that end a sentence (the last one at the end of the file with no blank line after it), a
sentence whose predicted chunk would continue into the next sentence's ``I-``, all-``O`` sentences, a type found only
in the predictions (DATE), and wrong spans and wrong types.

``output.txt`` is what conlleval.pl printed for it, produced with::

    perl conlleval.pl < tests/fixtures/conlleval/input.txt > tests/fixtures/conlleval/output.txt

using the classic CoNLL-2000 script by Erik Tjong Kim Sang ("version: 2004-01-26" in its header), default options
(space delimiter, ``-X-``/blank-line boundaries), under perl 5.36.0. The PyPI package ``conlleval`` 0.2 (a Python
port, MIT) prints the same seven lines for the same input. The script itself is not shipped here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from bench.errors import BenchError
from bench.stats.ratios import Ratios
from bench.tasks.entities import (
    RECIPES,
    STATS,
    chunks,
    entity_types,
    from_sums,
    label_sequences,
    sentence_counts,
    type_counts,
    type_recipes,
    type_stats,
)

FIXTURE = Path(__file__).parent / "fixtures" / "conlleval"


def read_fixture() -> tuple[list[list[str]], list[list[str]]]:
    """The fixture's gold and predicted tag sequences, one list per sentence."""
    gold, pred, g, p = [], [], [], []
    for line in (FIXTURE / "input.txt").read_text().splitlines() + [""]:
        if line.strip():
            _, a, b = line.split(" ")
            g.append(a)
            p.append(b)
        elif g:
            gold.append(g)
            pred.append(p)
            g, p = [], []
    return gold, pred


def read_conlleval() -> dict:
    """conlleval's printed numbers: counts, overall and per-type percentages (2 decimals) and found chunks."""
    text = (FIXTURE / "output.txt").read_text()
    head = re.search(r"processed (\d+) tokens with (\d+) phrases; found: (\d+) phrases; correct: (\d+)\.", text)
    overall = re.search(r"accuracy: +([\d.]+)%; precision: +([\d.]+)%; recall: +([\d.]+)%; FB1: +([\d.]+)", text)
    types = {m[1]: (float(m[2]), float(m[3]), float(m[4]), int(m[5])) for m in re.finditer(
        r"^ *(\S+): precision: +([\d.]+)%; recall: +([\d.]+)%; FB1: +([\d.]+) +(\d+)$", text, re.M)}
    return {"counts": tuple(int(x) for x in head.groups()), "overall": tuple(float(x) for x in overall.groups()),
            "types": types}


def pct(x: float) -> float:
    return round(100 * x, 2)


GOLD, PRED = read_fixture()
CONLL = read_conlleval()


def test_fixture_reads_as_conlleval_did():
    assert len(GOLD) == 33 and sum(map(len, GOLD)) == CONLL["counts"][0] == 183
    assert sorted(CONLL["types"]) == ["DATE", "LOC", "MISC", "ORG", "PER"]


def test_summed_counts_equal_conlleval_counts_and_scores():
    sums = sentence_counts(GOLD, PRED).sum(axis=0)
    tp, n_pred, n_true, tok_correct, tok_total = sums
    assert (tok_total, n_true, n_pred, tp) == CONLL["counts"] == (183, 50, 54, 32)
    m = from_sums(sums)
    assert (pct(m["token_accuracy"]), pct(m["entity_precision"]), pct(m["entity_recall"]),
            pct(m["entity_f1"])) == CONLL["overall"] == (84.15, 59.26, 64.00, 61.54)


def test_per_type_counts_equal_conlleval():
    types = entity_types(sorted({t for s in GOLD + PRED for t in s}))
    sums = type_counts(GOLD, PRED, types).sum(axis=0)
    columns = type_stats(types)
    recipes = {**type_recipes(types),
               **{f"{name}@{k}": {"ratios": [{"num": {f"tp@{k}": 1}, "den": {f"{den}@{k}": 1}}]}
                  for k in types for name, den in (("precision", "n_pred"), ("recall", "n_true"))}}
    m = from_sums(sums, columns, recipes)
    for k, (precision, recall, f1, found) in CONLL["types"].items():
        assert (pct(m[f"precision@{k}"]), pct(m[f"recall@{k}"]), pct(m[f"f1@{k}"])) == (precision, recall, f1), k
        assert sums[columns.index(f"n_pred@{k}")] == found, k
    # the per-type columns add up to the overall ones: every chunk has a type in the tag set
    overall = sentence_counts(GOLD, PRED).sum(axis=0)[:3]
    assert np.array_equal(sums.reshape(-1, 3).sum(axis=0), overall)


def test_seqeval_equals_conlleval_on_the_fixture():
    assert (pct(precision_score(GOLD, PRED)), pct(recall_score(GOLD, PRED)), pct(f1_score(GOLD, PRED))) \
        == CONLL["overall"][1:]
    report = classification_report(GOLD, PRED, output_dict=True, zero_division=0)
    for k, (precision, recall, f1, _) in CONLL["types"].items():
        row = report[k]
        assert (pct(row["precision"]), pct(row["recall"]), pct(row["f1-score"])) == (precision, recall, f1), k


def test_summed_subsets_equal_seqeval_on_the_subset():
    """Summing per-sentence counts over any multiset of sentences gives seqeval's score on those sentences put
    together: so a bootstrap replicate (drawn with replacement) or a leave-one-out set is scored exactly."""
    counts = sentence_counts(GOLD, PRED)
    rng = np.random.default_rng(0)
    n = len(GOLD)
    draws = [rng.choice(n, size=rng.integers(1, n + 1), replace=False) for _ in range(100)]
    draws += [rng.integers(0, n, size=n) for _ in range(100)]  # bootstrap replicates, with repeats
    draws += [np.delete(np.arange(n), i) for i in range(n)]  # leave one sentence out
    for idx in draws:
        g, p = [GOLD[i] for i in idx], [PRED[i] for i in idx]
        m = from_sums(counts[idx].sum(axis=0))
        assert m["entity_f1"] == pytest.approx(f1_score(g, p, zero_division=0), abs=1e-12)
        assert m["entity_precision"] == pytest.approx(precision_score(g, p, zero_division=0), abs=1e-12)
        assert m["entity_recall"] == pytest.approx(recall_score(g, p, zero_division=0), abs=1e-12)


def test_chunks_by_hand():
    # IOB1 and IOB2 spellings of the same three chunks give the same chunks
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert chunks(iob1, "IOB1") == chunks(iob2) == {("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)}
    # a type change inside a chunk splits it; a chunk at the end of the sentence is closed
    assert chunks(["B-ORG", "I-LOC", "I-LOC"]) == {("ORG", 0, 1), ("LOC", 1, 3)}
    assert chunks(["O", "O"]) == set() and chunks([]) == set()
    # strict IOBES: a well-formed sentence, and an I- with no B- that strict mode drops
    assert chunks(["B-PER", "E-PER", "S-LOC", "O"], "IOBES") == {("PER", 0, 2), ("LOC", 2, 3)}
    assert chunks(["I-PER", "E-PER"], "IOBES") == set()


def test_sentence_boundary_ends_a_chunk():
    """A predicted B-LOC that ends one sentence and an I-LOC that opens the next are two chunks, as conlleval's
    blank line makes them; both match the gold B-LOC chunks."""
    counts = sentence_counts([["O", "B-LOC"], ["B-LOC", "O"]], [["O", "B-LOC"], ["I-LOC", "O"]])
    assert counts.tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 2]]


def test_zero_denominators_score_zero_as_conlleval_prints():
    m = from_sums(sentence_counts([["O", "O"]], [["O", "O"]]).sum(axis=0))
    assert m == {"entity_f1": 0.0, "entity_precision": 0.0, "entity_recall": 0.0, "token_accuracy": 1.0}


def test_recipes_name_only_stats_columns():
    for recipe in RECIPES.values():
        for ratio in recipe["ratios"]:
            assert set(ratio["num"]) | set(ratio["den"]) <= set(STATS)
    assert STATS == ("tp", "n_pred", "n_true", "tok_correct", "tok_total")


def test_recipes_parse_and_score_as_the_report_does():
    """The report scores recipes with bench.stats.ratios; it reads these recipes to the same numbers."""
    counts = sentence_counts(GOLD, PRED)
    mine = from_sums(counts.sum(axis=0))
    for metric, recipe in RECIPES.items():
        assert Ratios.parse(metric, recipe, STATS).value(counts) == pytest.approx(mine[metric], abs=1e-12), metric
    types = entity_types(sorted({t for s in GOLD + PRED for t in s}))
    per_type = type_counts(GOLD, PRED, types)
    for metric, recipe in type_recipes(types).items():
        assert Ratios.parse(metric, recipe, type_stats(types)).value(per_type) == pytest.approx(
            from_sums(per_type.sum(axis=0), type_stats(types), {metric: recipe})[metric], abs=1e-12)


def test_label_sequences_drop_unlabelled_words():
    classes = ["O", "B-PER", "I-PER"]
    gold, pred = label_sequences([np.array([1, -1, 2, 0])], [np.array([1, 2, 2, 0])], classes)
    assert (gold, pred) == ([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])
    assert sentence_counts(gold, pred).tolist() == [[1, 1, 1, 3, 3]]
    with pytest.raises(BenchError, match="prediction tag id 3 is outside 0..2"):
        label_sequences([np.array([0])], [np.array([3])], classes)


def test_bad_input_is_one_line():
    with pytest.raises(BenchError, match=r"sentence 0: 1 predicted tags for 2 gold ones"):
        sentence_counts([["O", "O"]], [["O"]])
    with pytest.raises(BenchError, match=r"2 predicted sentences for 1 gold ones"):
        sentence_counts([["O"]], [["O"], ["O"]])
    with pytest.raises(BenchError, match=r"unknown tagging scheme 'IOB'; valid: IOB1, IOB2, BIO, IOBES, BIOES, BILOU"):
        chunks(["O"], "IOB")
