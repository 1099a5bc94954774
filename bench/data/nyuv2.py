"""NYUv2 and CityScapes as the MTAN, Nash-MTL and LibMTL repositories distribute them: preprocessed ``.npy`` files.

Layout under ``data_dir`` (alias ``root``; default ``$BENCH_NYUV2_DIR`` / ``$BENCH_CITYSCAPES_DIR``, else
``~/.cache/bench/nyuv2`` / ``~/.cache/bench/cityscapes``), one file per image, numbered from 0::

    <data_dir>/train/image/<i>.npy    (H, W, 3) float in [0, 1]
    <data_dir>/train/label/<i>.npy    (H, W) float class ids, -1 = unlabelled pixel   (NYUv2: 13 classes)
    <data_dir>/train/depth/<i>.npy    (H, W, 1) float, 0 = no depth reading
    <data_dir>/train/normal/<i>.npy   (H, W, 3) float unit vectors, all-zero = no normal   (NYUv2 only)
    <data_dir>/val/...                the same; the published tables are measured on it

CityScapes has ``label_7`` (the 7-class labels every table uses), ``label_19`` and ``label_2`` instead of ``label``
(option ``classes``: 7, 19 or 2); LibMTL's copy names its 7-class folder ``label``, which is read when ``label_7``
is absent. NYUv2: 288x384, 795 train / 654 val; CityScapes: 128x256 (the 651 MB "cityscapes2" release), 2975 train
/ 500 val. Readers of this layout: lorenmt/mtan ``im2im_pred/create_dataset.py`` lines 18-31 (``train``/``val``,
``np.moveaxis(..., -1, 0)`` of image, depth and normal), AvivNavon/nash-mtl ``experiments/nyuv2/data.py`` lines
83-102, LibMTL ``examples/nyu/create_dataset.py`` and ``examples/cityscapes/create_dataset.py``, FAMO
``experiments/cityscapes/data.py`` (``label_7``).

Splits: ``train`` is train; ``val`` is returned as ``test`` (what the papers report on). A ``validation`` split is
carved from train by :mod:`bench.data.base` (seeded, ``split.validation`` of it), as for every source without one:
the papers have none (Nash-MTL averages the last 10 epochs' test results; LibMTL's newer ``data_split.json`` holds
out 159 of the 795 training images), and bench picks the epoch on validation.

Columns (a task reads its ``label:``, else its own name): ``segmentation`` int64 ``(N, H, W)``, -1 ignored;
``depth`` float32 ``(N, H, W)``, 0 invalid; ``normals`` float32 ``(N, 3, H, W)``, all-zero invalid. Images come back
``(N, 3, H, W)``: uint8 when the stored floats are exactly k/255 (nothing lost), else float32 in [0, 1] as stored
(option ``image_dtype``: ``auto`` (default), ``uint8`` to save memory at a rounding of at most 1/510, ``float32``).
Option ``max_per_split``: the first N files of each split (a smoke test, not the protocol).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source
from bench.errors import BenchError, did_you_mean


@dataclass(frozen=True)
class Layout:
    """One dataset's folders and where to get it."""

    name: str
    env: str
    default_dir: str
    columns: dict[str, str]  # column -> folder under <split>/ ("{classes}": the data option `classes`)
    classes: tuple[int, ...]  # label sets offered; the first is the default
    url: str


NYUV2 = Layout("NYUv2", "BENCH_NYUV2_DIR", "~/.cache/bench/nyuv2",
               {"segmentation": "label", "depth": "depth", "normals": "normal"}, (13,),
               "https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa (MTAN's preprocessed NYUv2)")
CITYSCAPES = Layout("CityScapes", "BENCH_CITYSCAPES_DIR", "~/.cache/bench/cityscapes",
                    {"segmentation": "label_{classes}", "depth": "depth"}, (7, 19, 2),
                    "https://www.dropbox.com/s/lg2ktu7o8hzwf99/cityscapes2.zip (MTAN's 128x256 CityScapes)")
FOLDERS = {"train": "train", "test": "val"}  # bench split -> folder: the published tables are measured on val
IMAGE_DTYPES = ("auto", "uint8", "float32")


def data_root(layout: Layout, spec: DataSpec) -> Path:
    raw = spec.options.get("data_dir") or spec.options.get("root") or os.environ.get(layout.env) or layout.default_dir
    return Path(str(raw)).expanduser()


def _missing(layout: Layout, root: Path, what: str | None = None) -> MissingData:
    where = f"{what} under data_dir {root}" if what else f"data_dir {root} does not exist"
    return MissingData(f"{layout.name}: {where}; download {layout.url} and run with "
                       f"data_dir=<the folder holding train/ and val/> (or set {layout.env})")


def numbered(folder: Path, layout: Layout, root: Path) -> int:
    """How many files ``0.npy`` .. ``<n-1>.npy`` the folder holds (a gap in the numbering is an error)."""
    if not folder.is_dir():
        raise _missing(layout, root, f"no folder {folder.relative_to(root)}")
    ids = sorted(int(m.group(1)) for f in os.listdir(folder) if (m := re.fullmatch(r"(\d+)\.npy", f)))
    if not ids:
        raise _missing(layout, root, f"no <i>.npy file in {folder.relative_to(root)}")
    if ids != list(range(len(ids))):
        gap = next(i for i, j in enumerate(ids) if i != j)
        raise _missing(layout, root, f"{folder.relative_to(root)}/{gap}.npy is missing ({len(ids)} files, numbered "
                                     f"up to {ids[-1]})")
    return len(ids)


def label_classes(layout: Layout, spec: DataSpec) -> int:
    """The ``classes`` data option (which label set), checked against what the dataset offers."""
    classes = spec.options.get("classes", layout.classes[0])
    if classes not in layout.classes:
        raise BenchError(f"{layout.name}: data option classes={classes!r} is not offered; use one of "
                         f"{', '.join(map(str, layout.classes))}")
    return int(classes)


def segmentation_folder(layout: Layout, classes: int, split_dir: Path) -> str:
    """``label`` (NYUv2) or ``label_<classes>`` (CityScapes; LibMTL's copy calls the 7-class folder ``label``)."""
    folder = layout.columns["segmentation"].format(classes=classes)
    if classes == layout.classes[0] and not (split_dir / folder).is_dir() and (split_dir / "label").is_dir():
        return "label"
    return folder


def read_stack(folder: Path, n: int, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Files ``0.npy`` .. ``<n-1>.npy`` stacked as float32 (uint8 kept); each must have ``shape`` (a trailing channel
    of 1 may be absent). float32 holds class ids and k/255 exactly enough, at half the memory of float64 files."""
    first = np.load(folder / "0.npy")
    out = np.empty((n, *shape), dtype=np.uint8 if first.dtype == np.uint8 else np.float32)
    for i in range(n):
        a = first if i == 0 else np.load(folder / f"{i}.npy")
        if a.shape != shape and a.shape + (1,) != shape:
            raise BenchError(f"{folder / f'{i}.npy'}: shape {a.shape}, expected {shape} ({what}); the files of one "
                             "example must share the image's height and width")
        out[i] = a.reshape(shape)
    return out


def segmentation_ids(raw: np.ndarray, classes: int, where: str) -> np.ndarray:
    """Stored float class ids -> int64; -1 (and any negative id) = ignored; refuse non-integers and ids >= classes."""
    ids = np.rint(raw).astype(np.int64)
    if not np.array_equal(ids, raw):
        raise BenchError(f"{where}: segmentation labels must be whole numbers (class ids, -1 = ignore)")
    top = int(ids.max(initial=-1))
    if top >= classes:
        raise BenchError(f"{where}: class id {top} in a {classes}-class labelling; check the folder and option classes")
    ids[ids < 0] = -1
    return ids


def exact_bytes(hwc: np.ndarray) -> bool:
    """Whether every stored value is k/255 for a whole k in 0..255 (then uint8 loses nothing); one image at a time."""
    if hwc.dtype == np.uint8:
        return True
    for img in hwc:
        scaled = img.astype(np.float64) * 255.0
        if not (np.all(np.abs(scaled - np.rint(scaled)) < 1e-3) and scaled.min() >= 0 and scaled.max() <= 255):
            return False
    return True


def image_array(hwc: np.ndarray, uint8: bool) -> np.ndarray:
    """(N, H, W, 3) as stored -> (N, 3, H, W): uint8 (rounded from [0, 1]) or float32 as stored."""
    x = np.moveaxis(hwc, -1, 1)
    if hwc.dtype == np.uint8 or not uint8:
        return np.ascontiguousarray(x, dtype=hwc.dtype if hwc.dtype == np.uint8 else np.float32)
    out = np.empty(x.shape, dtype=np.uint8)
    for i in range(len(x)):  # one image at a time: a float64 copy of the whole split would be gigabytes
        out[i] = np.clip(np.rint(x[i].astype(np.float64) * 255.0), 0, 255)
    return out


def read_split(layout: Layout, root: Path, folder: str, columns: list[str], classes: int,
               limit: int | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One split's images (as stored, (N, H, W, 3)) and the asked-for columns in the contract's shapes."""
    split_dir = root / folder
    n = numbered(split_dir / "image", layout, root)
    n = min(n, limit) if limit else n
    hw = np.load(split_dir / "image" / "0.npy").shape[:2]
    images = read_stack(split_dir / "image", n, (*hw, 3), "the image, (H, W, 3)")
    out: dict[str, np.ndarray] = {}
    for column in columns:
        sub = segmentation_folder(layout, classes, split_dir) if column == "segmentation" else layout.columns[column]
        count = numbered(split_dir / sub, layout, root)
        if count < n:
            raise _missing(layout, root, f"{folder}/{sub} has {count} files for {n} images")
        where = f"{layout.name} {split_dir / sub}"
        if column == "segmentation":
            out[column] = segmentation_ids(read_stack(split_dir / sub, n, hw, "class ids, (H, W)"), classes, where)
        elif column == "depth":
            out[column] = read_stack(split_dir / sub, n, (*hw, 1), "depth, (H, W, 1)")[..., 0].astype(np.float32)
        else:  # normals: HWC as stored -> (N, 3, H, W)
            hwc = read_stack(split_dir / sub, n, (*hw, 3), "normals, (H, W, 3)")
            out[column] = np.ascontiguousarray(np.moveaxis(hwc, -1, 1), dtype=np.float32)
    return images, out


def load(layout: Layout, spec: DataSpec, tasks: list[TaskConfig]) -> dict[str, Split]:
    """Every split of ``layout`` with the columns ``tasks`` read; one-line errors for what is absent or malformed."""
    valid = tuple(layout.columns)
    columns = []
    for t in tasks:
        column = t.label or t.name
        if column not in valid:
            raise BenchError(f"task {t.name!r}: {layout.name} has no label column {column!r}"
                             f"{did_you_mean(column, valid)}; use one of {', '.join(valid)} (label: or the task name)")
        if column not in columns:
            columns.append(column)
    mode = spec.options.get("image_dtype", "auto")
    if mode not in IMAGE_DTYPES:
        raise BenchError(f"{layout.name}: data option image_dtype={mode!r}; use one of {', '.join(IMAGE_DTYPES)}")
    limit = spec.options.get("max_per_split")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BenchError(f"{layout.name}: data option max_per_split={limit!r} must be a whole number >= 1")
    classes = label_classes(layout, spec)
    root = data_root(layout, spec)
    if not root.is_dir():
        raise _missing(layout, root)
    raw = {split: read_split(layout, root, folder, columns, classes, limit) for split, folder in FOLDERS.items()}
    # one dtype for every split: uint8 only if it is asked for or loses nothing in any split
    uint8 = mode == "uint8" or (mode == "auto" and all(exact_bytes(images) for images, _ in raw.values()))
    size = raw["train"][0].shape[1:3]
    out = {}
    for split, (images, targets) in raw.items():
        if images.shape[1:3] != size:
            raise BenchError(f"{layout.name}: {split} images are {images.shape[1:3]}, train images {size}; both "
                             "splits must share one resolution")
        out[split] = Split(image_array(images, uint8), targets)
    return out


@register_source("nyuv2")
def nyuv2(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """NYUv2, 13-class segmentation, depth, normals: MTAN's preprocessed .npy files (795 train, 654 val -> test)."""
    return load(NYUV2, spec, tasks)


@register_source("cityscapes")
def cityscapes(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """CityScapes, 7-class (or 19/2) segmentation and depth: MTAN's 128x256 .npy files (2975 train, 500 val)."""
    return load(CITYSCAPES, spec, tasks)
