"""CelebA's 40 binary face attributes, read from torchvision's file layout with the FAMO paper's protocol.

Layout under ``data_dir`` (alias ``root``; default ``$BENCH_VISION_DIR`` or ``~/.cache/bench/vision``), as
``torchvision.datasets.CelebA(root)`` expects it::

    <data_dir>/celeba/list_attr_celeba.txt      # line 1: count, line 2: the 40 names, then "<file> ±1 x 40"
    <data_dir>/celeba/list_eval_partition.txt   # "<file> 0|1|2": the official train/valid/test partition
    <data_dir>/celeba/img_align_celeba/*.jpg    # the aligned 178x218 crops

The files are parsed here rather than through ``torchvision.datasets.CelebA``: that class checks each text file's
MD5 against the official copy, so it cannot read a subset or the small files the tests write; the parsing is the
same (whitespace-separated, attribute ``-1`` -> 0, ``1`` -> 1, joined by file name). An attribute written as ``0``
(not in the official files) is read as missing (-1).

Protocol (FAMO's CelebA experiment, github.com/Cranial-XIX/FAMO ``experiments/celeba/data.py``: line 11
``image_size=(64,64)``, lines 34-36 partition 0/1/2 = train/val/test, line 38 ``1`` -> 1 else 0, line 41
``transforms.Resize(target_size)``): each image resized to 64x64 (PIL bilinear, what torchvision's ``Resize`` does
on a PIL image; the aspect ratio is not kept) and the official partition used as is. Images are returned as
``(N, 3, 64, 64)`` uint8; the backbone scales them to [0, 1].

Label columns (tasks pick one with ``label:``, or by their own name): each attribute by its name (``Male``,
``Smiling``, ...; int64 0/1, for 40 ``classification`` tasks with ``num_classes: 2``, the papers' layout) and
``attributes`` ((N, 40) int8, for one ``multi_label`` task with 40 labels; names in :data:`ATTRIBUTES` order).
Options: ``image_size`` (default 64), ``max_per_split`` (read only the first N files of each split, in file order:
a smoke test, not the protocol).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source
from bench.errors import BenchError, did_you_mean

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
ALL_COLUMN = "attributes"
PARTITION = {"0": "train", "1": "validation", "2": "test"}  # list_eval_partition.txt's codes


def celeba_root(spec: DataSpec) -> Path:
    raw = (spec.options.get("data_dir") or spec.options.get("root") or os.environ.get("BENCH_VISION_DIR")
           or "~/.cache/bench/vision")
    return Path(str(raw)).expanduser() / "celeba"


def _need(path: Path, what: str, root: Path) -> Path:
    if not path.exists():
        raise MissingData(f"CelebA: {path} not found ({what}); put img_align_celeba/, list_attr_celeba.txt and "
                          f"list_eval_partition.txt in {root}, or run with data_dir=<the folder that holds celeba/>")
    return path


def read_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """``list_attr_celeba.txt`` -> (file names, (N, 40) int8 of 1/0, -1 where an attribute is neither 1 nor -1)."""
    lines = path.read_text().splitlines()
    names = lines[1].split() if len(lines) > 1 else []
    if tuple(names) != ATTRIBUTES:
        raise BenchError(f"CelebA: {path} line 2 should name the 40 attributes ({ATTRIBUTES[0]} ... "
                         f"{ATTRIBUTES[-1]}); found {len(names)} names; use the official list_attr_celeba.txt")
    files, rows = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(ATTRIBUTES) + 1:
            raise BenchError(f"CelebA: {path} line {number} has {len(parts) - 1} values, expected {len(ATTRIBUTES)}")
        files.append(parts[0])
        rows.append([1 if v == "1" else 0 if v == "-1" else -1 for v in parts[1:]])
    return files, np.array(rows, dtype=np.int8).reshape(-1, len(ATTRIBUTES))


def read_partition(path: Path) -> dict[str, str]:
    """``list_eval_partition.txt`` -> {file name: "train" | "validation" | "test"}."""
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in PARTITION:
            raise BenchError(f"CelebA: {path} line {number} should be '<file> 0|1|2', found {line.strip()!r}")
        out[parts[0]] = PARTITION[parts[1]]
    return out


def load_images(folder: Path, files: list[str], size: int) -> np.ndarray:
    """JPEGs -> (N, 3, size, size) uint8, resized like FAMO's ``transforms.Resize((size, size))`` on PIL images.

    Decoded on a few threads (PIL releases the GIL while decoding and resizing; each image lands in its own row, so
    the result does not depend on the order): the full set is 202,599 files."""
    from PIL import Image

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        with Image.open(_need(folder / files[i], "an image listed in list_attr_celeba.txt", folder.parent)) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(files))))  # list(): re-raise a worker's MissingData here
    return out


def _whole(spec: DataSpec, key: str) -> int | None:
    value = spec.options.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise BenchError(f"CelebA: data option {key}={value!r} must be a whole number >= 1")
    return value


def _columns(labels: np.ndarray) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {ALL_COLUMN: labels}
    for k, name in enumerate(ATTRIBUTES):
        columns[name] = labels[:, k].astype(np.int64)
    return columns


@register_source("celeba")
def celeba(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """CelebA, 202,599 faces, 40 attributes, official partition (torchvision layout under data_dir)."""
    valid = (ALL_COLUMN, *ATTRIBUTES)
    for t in tasks:
        column = t.label or t.name
        if column not in valid:
            raise BenchError(f"task {t.name!r}: CelebA has no label column {column!r}{did_you_mean(column, valid)}; "
                             f"use an attribute name or {ALL_COLUMN!r}")
    size = _whole(spec, "image_size") or 64
    limit = _whole(spec, "max_per_split")
    root = celeba_root(spec)
    files, labels = read_attributes(_need(root / "list_attr_celeba.txt", "the 40 attributes", root))
    partition = read_partition(_need(root / "list_eval_partition.txt", "the official split", root))
    images = _need(root / "img_align_celeba", "the aligned images", root)
    out = {}
    for split in PARTITION.values():
        rows = [i for i, f in enumerate(files) if partition.get(f) == split]
        if limit is not None:
            rows = rows[:limit]
        if not rows:
            raise BenchError(f"CelebA: no image of {root / 'list_attr_celeba.txt'} is in the {split} partition; "
                             "check list_eval_partition.txt")
        idx = np.array(rows, dtype=np.int64)
        out[split] = Split(load_images(images, [files[i] for i in rows], size), _columns(labels[idx]))
    return out
