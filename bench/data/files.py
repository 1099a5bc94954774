"""The no-code source: task groups from local CSV / TSV / parquet / JSONL files or image folders.

A suite file names the files and columns; nothing else is needed (worked example: ``docs/suites.md``).

Table options (``source: files``):
    ``path``                  one file; validation and test are carved from it (seeded, stratified), or
    ``train`` / ``validation`` / ``test``   one file per split (``train`` required; the others carved when absent)
    ``text`` (default ``text``), ``text_pair`` (optional second text column: the task becomes a pair task)
    ``label`` (default ``label``): the target column. Single-input suites read each task's ``label:`` column.
    ``label_names``: the class names in id order (a list; in single-input suites a dict column -> list) for string
                     labels (else the task's ``classes:``). Without either, string labels are numbered in sorted
                     order over all the task's files.
    A blank cell is a missing label of that task (partial labels: the example trains and scores the other tasks).
    Each task's kind reads its column (:mod:`bench.tasks`): class ids or names, numbers, a tag sequence per row for
    ``token_classification`` (tag names separated by spaces, or a list in JSONL; the ``text`` column then holds the
    words, separated by spaces or as a list, with ``input: words``), a label list for ``multi_label``.
Image options:
    ``images``: a folder ``<images>/<split>/<class>/*.png|jpg`` with split folders ``train`` and optionally
                ``validation`` (or ``val``) and ``test``; class ids follow ``label_names`` or the sorted class
                folder names of ``train``. ``image_size``: resize to a square of this size (required when the
                images differ in size); ``mode``: ``L`` (grayscale) or ``RGB`` (default: ``L`` when every image is).
Relative paths are resolved against the data option ``data_dir`` when given (``bench run data_dir=DIR`` sets it),
else against the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source
from bench.errors import BenchError
from bench.tasks import task_kind

SPLITS = ("train", "validation", "test")
IMAGE_SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val", "valid"), "test": ("test",)}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_table(path: Path):
    """A pandas DataFrame from a .csv, .tsv, .parquet, .jsonl or .json file."""
    import pandas as pd

    if not path.is_file():
        raise MissingData(f"data file {path} does not exist; fix the path in the suite's data options")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        return pd.read_json(path)
    raise BenchError(f"data file {path}: unknown format {suffix!r}; use .csv, .tsv, .parquet or .jsonl")


def _path(opts: dict[str, Any], value: Any) -> Path:
    p = Path(str(value)).expanduser()
    return Path(str(opts["data_dir"])).expanduser() / p if opts.get("data_dir") and not p.is_absolute() else p


def _table_paths(opts: dict[str, Any]) -> dict[str, Path]:
    if opts.get("path"):
        return {"train": _path(opts, opts["path"])}
    paths = {s: _path(opts, opts[s]) for s in SPLITS if opts.get(s)}
    if "train" not in paths:
        raise BenchError("source 'files' needs a data option path: <file>, train: <file> or images: <folder>")
    return paths


def _columns(tasks: list[TaskConfig], opts: dict[str, Any]) -> dict[str, str]:
    """Target key -> file column. One task: option ``label``; several (single-input): each task's ``label``."""
    if len(tasks) == 1 and not tasks[0].label:
        return {tasks[0].name: str(opts.get("label", "label"))}
    return {t.label or t.name: t.label or t.name for t in tasks}


def _names_for(opts: dict[str, Any], column: str, single: bool) -> list[str] | None:
    names = opts.get("label_names")
    if isinstance(names, dict):
        names = names.get(column)
    elif names is not None and not single:
        raise BenchError("data option label_names must be a dict column -> list of names when several tasks "
                         "read the same files")
    return [str(n) for n in names] if names is not None else None


def _need(df, column: str, path: Path, option: str) -> None:
    if column not in df.columns:
        raise BenchError(f"{path}: no {option} column {column!r}; available columns: "
                         f"{', '.join(map(str, df.columns))}; set the data option {option}: <column>")


def _tables(spec: DataSpec, tasks: list[TaskConfig]) -> dict[str, Split]:
    import pandas as pd

    opts = spec.options
    frames = {s: (read_table(p), p) for s, p in _table_paths(opts).items()}
    text, pair = str(opts.get("text", "text")), opts.get("text_pair")
    columns = _columns(tasks, opts)
    by_key = {t.label or t.name: t for t in tasks}
    single = len(columns) == 1
    names: dict[str, list[str] | None] = {}
    for key, col in columns.items():
        names[col] = _names_for(opts, col, single)
        for df, path in frames.values():
            _need(df, col, path, "label")
        names[col] = names[col] or by_key[key].classes
        if names[col] is None:
            vals = [v for df, _ in frames.values() for v in df[col].dropna()]
            if any(isinstance(v, str) for v in vals):  # undeclared string classes: sorted, documented
                names[col] = sorted({str(v) for v in vals})
    out = {}
    for split, (df, path) in frames.items():
        _need(df, text, path, "text")
        first = df[text].astype(str).tolist()
        if tasks[0].input == "words":  # a list cell (JSONL) or words separated by whitespace
            inputs: Any = [tuple(str(w) for w in v) if isinstance(v, (list, tuple, np.ndarray)) else
                           () if pd.isna(v) else tuple(str(v).split()) for v in df[text]]
        elif pair:
            _need(df, str(pair), path, "text_pair")
            inputs = list(zip(first, df[str(pair)].astype(str).tolist()))
        else:
            inputs = first
        targets = {}
        for key, col in columns.items():
            y = task_kind(by_key[key]).from_column(df[col], names[col], f"{path}: column {col!r}")
            targets[key] = y
            targets[by_key[key].name] = y
        out[split] = Split(inputs, targets)
    return out


def _load_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if size:
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr if mode == "L" else arr.transpose(2, 0, 1)


def _is_gray(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return im.mode in ("L", "1", "I", "I;16")


def _images(spec: DataSpec, tasks: list[TaskConfig]) -> dict[str, Split]:
    opts = spec.options
    root = _path(opts, opts["images"])
    dirs = {}
    for split, candidates in IMAGE_SPLIT_DIRS.items():
        found = [root / c for c in candidates if (root / c).is_dir()]
        if found:
            dirs[split] = found[0]
    if "train" not in dirs:
        raise MissingData(f"image folder {root} has no train/ subfolder; lay it out as {root}/train/<class>/*.png")
    task = tasks[0]
    declared = opts.get("label_names")
    classes = [str(c) for c in declared] if declared else sorted(p.name for p in dirs["train"].iterdir()
                                                                 if p.is_dir())
    ids = {c: i for i, c in enumerate(classes)}
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, d in dirs.items():
        rows = []
        for cdir in sorted(p for p in d.iterdir() if p.is_dir()):
            if cdir.name not in ids:
                raise BenchError(f"{cdir}: class folder {cdir.name!r} is not a declared class of task "
                                 f"{task.name!r} ({', '.join(classes)}); add it to label_names or remove it")
            rows += [(f, ids[cdir.name]) for f in sorted(cdir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not rows:
            raise MissingData(f"image folder {d} holds no images; expected {d}/<class>/*.png")
        files[split] = rows
    mode = opts.get("mode")
    if mode is None:
        every = [f for rows in files.values() for f, _ in rows]
        mode = "L" if all(_is_gray(f) for f in every) else "RGB"
    if mode not in ("L", "RGB"):
        raise BenchError(f"data option mode={mode!r}: use L (grayscale) or RGB")
    size = opts.get("image_size")
    out = {}
    for split, rows in files.items():
        arrays = [_load_image(f, mode, int(size) if size else None) for f, _ in rows]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise BenchError(f"images under {dirs[split]} differ in size {sorted(shapes)[:2]}; "
                             "set the data option image_size: <pixels>")
        y = np.array([c for _, c in rows], dtype=np.int64)
        out[split] = Split(np.stack(arrays), {task.name: y, **({task.label: y} if task.label else {})})
    return out


@register_source("files")
def files(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Local CSV/TSV/parquet/JSONL tables or image folders, described in the suite file alone."""
    return _images(spec, tasks) if spec.options.get("images") else _tables(spec, tasks)
