"""CoNLL-2003 English (Reuters news: NER with its POS and chunk columns) from local files or the Hugging Face hub.

Where the files come from, first match wins:
1. the data option ``data_dir`` (set for every task by ``bench run suite=... data_dir=DIR``; alias ``path``), else
   the environment variable ``BENCH_CONLL2003_DIR``: a folder holding the shared task's three files, named as
   distributed (``eng.train``, ``eng.testa``, ``eng.testb``) or as on the hub's mirrors (``train.txt``,
   ``valid.txt``, ``test.txt``);
2. ``datasets.load_dataset(hub_id)`` (option ``hub_id``, default ``eriktks/conll2003``, the hub's ``conll2003``)
   when the hub is reachable (or cached with ``HF_HUB_OFFLINE=1``).
Neither: one-line :class:`MissingData` naming ``data_dir=``.

File format: one word per line, four space-separated columns ``word POS chunk NER``; a blank line ends a sentence;
``-DOCSTART- -X- -X- O`` lines separate documents and are not words. The official splits are kept as they are
(train / testa -> validation / testb -> test), in file order, without deduplication: that is the published protocol.

Tag schemes: the files as distributed tag chunks and entities in IOB1 (``I-`` starts a chunk unless it follows a
chunk of the same type); the hub's copy is IOB2. Both columns are converted to IOB2 here
(:func:`bench.data.tagging.iob2`, a no-op on IOB2), so entity scoring sees the same spans either way. POS tags are
Penn Treebank tags as given.

Columns: a task reads ``ner``, ``pos`` or ``chunk``: its ``label:`` (single-input suites), else the data option
``column:``, else its own name. Targets come back under each column name and under the task's name; tag ids index
:data:`bench.data.tagging.CONLL2003_TAGS` (the hub's id order), which a suite lists as ``classes``
(``tag_names("conll2003", column)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source
from bench.data.glue import hub_offline_requested, hub_reachable
from bench.data.tagging import CONLL2003_TAGS, encode, iob2, read_columns, tag_array
from bench.errors import BenchError, unknown

HUB_ID = "eriktks/conll2003"
ENV_DIR = "BENCH_CONLL2003_DIR"
FILES = {"train": ("eng.train", "train.txt"), "validation": ("eng.testa", "valid.txt"),
         "test": ("eng.testb", "test.txt")}
COLUMNS = {"pos": 1, "chunk": 2, "ner": 3}  # field index in a line: word POS chunk NER
BIO_COLUMNS = ("chunk", "ner")  # IOB1 as distributed -> IOB2

Sentence = tuple[tuple[str, ...], dict[str, tuple[str, ...]]]  # words, tag strings per column


def read_conll(path: Path) -> list[Sentence]:
    """One CoNLL-2003 file -> sentences of (words, {column: tags}), chunk and NER converted to IOB2."""
    return [(tuple(r[0] for r in rows), _iob2_columns({c: [r[i] for r in rows] for c, i in COLUMNS.items()}))
            for rows in read_columns(path, width=4)]


def _iob2_columns(tags: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {c: tuple(iob2(t) if c in BIO_COLUMNS else t) for c, t in tags.items()}


def _local_dir(spec: DataSpec) -> Path | None:
    raw = spec.options.get("data_dir") or spec.options.get("path") or os.environ.get(ENV_DIR)
    return Path(str(raw)).expanduser() if raw else None


def read_local(folder: Path) -> dict[str, list[Sentence]]:
    """The three official splits from ``folder`` (either naming); a missing file is a one-line MissingData."""
    out = {}
    for split, names in FILES.items():
        found = [folder / n for n in names if (folder / n).is_file()]
        if not found:
            raise MissingData(f"CoNLL-2003: no {' or '.join(names)} in {folder}; put the shared task's files there "
                              f"(eng.train/eng.testa/eng.testb or train.txt/valid.txt/test.txt) or fix data_dir / "
                              f"{ENV_DIR}")
        out[split] = read_conll(found[0])
    return out


def read_hub(hub_id: str) -> dict[str, list[Sentence]]:
    """The three splits from the hub, tag ids mapped to names through the dataset's own ClassLabel features."""
    if not (hub_reachable() or hub_offline_requested()):
        raise MissingData(f"CoNLL-2003: the Hugging Face hub is unreachable and no local copy was given; run with "
                          f"data_dir=<dir> holding eng.train/eng.testa/eng.testb (or train.txt/valid.txt/test.txt), "
                          f"or set {ENV_DIR}")
    import datasets

    try:
        ds = datasets.load_dataset(hub_id)
    except (OSError, RuntimeError, ValueError) as e:  # network, offline cache miss, script-only dataset
        raise MissingData(f"CoNLL-2003: could not load {hub_id} from the hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); run with data_dir=<dir> holding "
                          f"eng.train/eng.testa/eng.testb (or train.txt/valid.txt/test.txt) instead") from None
    fields = {"pos": "pos_tags", "chunk": "chunk_tags", "ner": "ner_tags"}
    out = {}
    for split in FILES:
        part = ds[split]
        names = {c: part.features[f].feature.names for c, f in fields.items()}
        out[split] = [(tuple(row["tokens"]),
                       _iob2_columns({c: [names[c][i] for i in row[f]] for c, f in fields.items()}))
                      for row in part if row["tokens"] and row["tokens"][0] != "-DOCSTART-"]
    return out


def task_column(task: TaskConfig, spec: DataSpec) -> str:
    """Which column a task predicts: its ``label``, else the data option ``column``, else its name."""
    column = task.label or spec.options.get("column") or task.name
    if column not in COLUMNS:
        raise unknown("CoNLL-2003 column", str(column), COLUMNS)
    return str(column)


def to_split(sentences: list[Sentence], tasks: list[TaskConfig], spec: DataSpec, where: str) -> Split:
    targets: dict[str, np.ndarray] = {
        c: tag_array([encode(tags[c], CONLL2003_TAGS[c], f"{where} column {c}") for _, tags in sentences])
        for c in COLUMNS}
    for t in tasks:
        targets[t.name] = targets[task_column(t, spec)]
    return Split([words for words, _ in sentences], targets)


@register_source("conll2003")
def conll2003(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """CoNLL-2003 English: official train / validation (testa) / test (testb); options data_dir, hub_id, column."""
    for t in tasks:
        task_column(t, spec)  # a bad column fails before any file or hub is read
    folder = _local_dir(spec)
    if folder is not None and not folder.is_dir():
        raise MissingData(f"CoNLL-2003: data_dir {folder} is not a folder; point data_dir at the folder holding "
                          "eng.train/eng.testa/eng.testb (or train.txt/valid.txt/test.txt)")
    raw = read_local(folder) if folder is not None else read_hub(str(spec.options.get("hub_id", HUB_ID)))
    if not raw["train"]:
        raise BenchError(f"CoNLL-2003: the train split from {folder or HUB_ID} has no sentences")
    return {split: to_split(s, tasks, spec, f"CoNLL-2003 {split}") for split, s in raw.items()}
