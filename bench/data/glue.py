"""GLUE (``nyu-mll/glue``) from a local parquet copy or the Hugging Face hub.

Protocol (docs/protocol.md): the official dev set becomes the ``test`` split (GLUE's own test labels are hidden) and
validation is carved from train by :func:`bench.data.base.load_suite_data`, so this source returns ``train`` and
``test`` only; MNLI adds ``test_mismatched`` (the mismatched dev set) next to ``test`` (matched).

Where the files come from, first match wins:
1. the data option ``data_dir`` (set for every task by ``bench run suite=glue data_dir=DIR``; alias ``path``), else
   the environment variable ``BENCH_GLUE_DIR``: a folder in the hub layout,
   ``<dir>/<task>/train-*.parquet`` and ``<dir>/<task>/validation-*.parquet`` (MNLI: ``validation_matched-*`` and
   ``validation_mismatched-*``); ``<dir>`` may also be the task folder itself;
2. ``datasets.load_dataset("nyu-mll/glue", task)`` when the hub is reachable (or cached with ``HF_HUB_OFFLINE=1``).

Inputs are ``list[str]`` (CoLA, SST-2) or ``list[tuple[str, str]]`` (the pair tasks); targets are int64 class ids,
float32 scores for STS-B. Labels keep GLUE's ids (MNLI: 0 entailment, 1 neutral, 2 contradiction).
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source
from bench.data.text import label_targets
from bench.errors import BenchError, unknown

HUB_ID = "nyu-mll/glue"
ENV_DIR = "BENCH_GLUE_DIR"


class GlueTask(NamedTuple):
    columns: tuple[str, ...]  # one text column, or the two of a pair
    num_classes: int | None  # None: regression
    dev_splits: dict[str, str]  # hub split name -> our split name


_DEV = {"validation": "test"}
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(("sentence",), 2, _DEV),
    "sst2": GlueTask(("sentence",), 2, _DEV),
    "mrpc": GlueTask(("sentence1", "sentence2"), 2, _DEV),
    "stsb": GlueTask(("sentence1", "sentence2"), None, _DEV),
    "qqp": GlueTask(("question1", "question2"), 2, _DEV),
    "mnli": GlueTask(("premise", "hypothesis"), 3,
                     {"validation_matched": "test", "validation_mismatched": "test_mismatched"}),
    "qnli": GlueTask(("question", "sentence"), 2, _DEV),
    "rte": GlueTask(("sentence1", "sentence2"), 2, _DEV),
    "wnli": GlueTask(("sentence1", "sentence2"), 2, _DEV),
}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline_requested() -> bool:
    """The user said offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``): use caches, never the network."""
    return _truthy("HF_HUB_OFFLINE") or _truthy("HF_DATASETS_OFFLINE")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect. Checked once, so an offline machine fails in
    milliseconds instead of sitting through the hub clients' retry back-off (≈ 25 s per call)."""
    if hub_offline_requested():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _local_dir(spec: DataSpec, task: str) -> Path | None:
    raw = spec.options.get("data_dir") or spec.options.get("path") or os.environ.get(ENV_DIR)
    if not raw:
        return None
    root = Path(str(raw)).expanduser()
    if not (root / task).is_dir() and any(root.glob("train*.parquet")):
        return root  # the task folder itself
    return root / task


def _read_local(folder: Path, task: str, split: str):
    import pandas as pd

    files = sorted(folder.glob(f"{split}-*.parquet")) or sorted(folder.glob(f"{split}.parquet"))
    if not files:
        raise MissingData(f"GLUE {task}: no {folder}/{split}-*.parquet; copy the {task}/ folder of the hub "
                          f"dataset {HUB_ID} there (or fix data_dir / {ENV_DIR})")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True), files[0]


def _read_hub(task: str, hub_id: str, splits: list[str]) -> dict:
    if not (hub_reachable() or hub_offline_requested()):
        raise MissingData(f"GLUE {task}: the Hugging Face hub is unreachable and no local copy was given; "
                          f"run with data_dir=<dir> (or set {ENV_DIR}) pointing at a folder holding "
                          f"{task}/train-*.parquet and {task}/validation-*.parquet from {hub_id}")
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, task)
    except (OSError, RuntimeError, ValueError) as e:  # network, offline cache miss, unknown config
        raise MissingData(f"GLUE {task}: could not load {hub_id} from the hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); run with data_dir=<dir> holding "
                          f"{task}/train-*.parquet and {task}/validation-*.parquet instead") from None
    return {s: (ds[s].to_pandas(), f"{hub_id}/{task}[{s}]") for s in splits}


def _to_split(df, where: object, spec: GlueTask, task: str, tasks: list[TaskConfig]) -> Split:
    missing = [c for c in (*spec.columns, "label") if c not in df.columns]
    if missing:
        raise BenchError(f"{where}: missing column(s) {', '.join(missing)} for GLUE {task}; "
                         f"available: {', '.join(map(str, df.columns))}; use the {HUB_ID} parquet schema")
    if spec.num_classes is None:
        df = df[df["label"].notna()]
        y = df["label"].to_numpy(dtype=np.float32)
    else:
        df = df[df["label"] >= 0]  # -1: unlabelled (GLUE's hidden test labels)
        y = df["label"].to_numpy(dtype=np.int64)
    cols = [df[c].astype(str).tolist() for c in spec.columns]
    inputs = cols[0] if len(cols) == 1 else list(zip(cols[0], cols[1]))
    return Split(inputs, label_targets(tasks, y))


@register_source("glue")
def glue(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """A GLUE task (option ``task``, default the task name); dev set -> test (options: data_dir, hub_id)."""
    task = str(spec.options.get("task", tasks[0].name)).lower()
    if task not in GLUE_TASKS:
        raise unknown("GLUE task", task, GLUE_TASKS)
    info = GLUE_TASKS[task]
    hub_splits = {"train": "train", **info.dev_splits}
    folder = _local_dir(spec, task)
    if folder is not None:
        frames = {hub: _read_local(folder, task, hub) for hub in hub_splits}
    else:
        frames = _read_hub(task, str(spec.options.get("hub_id", HUB_ID)), list(hub_splits))
    return {ours: _to_split(*frames[hub], info, task, tasks) for hub, ours in hub_splits.items()}
