"""CIFAR-10, CIFAR-100 and SVHN: the online vision group, read from torchvision's file layout.

The files are parsed here directly (CIFAR's python pickles, SVHN's .mat), so a copy made on another machine works
as is and the loaders are testable on small files. torchvision is only called to download, and only with the data
option ``download: true``; otherwise absent files raise a one-line note saying where to put them.

Options: ``data_dir`` (alias ``root``; default ``$BENCH_VISION_DIR`` or ``~/.cache/bench/vision``), ``download``
(default false).
Layout under ``root`` (torchvision's): ``cifar-10-batches-py/{data_batch_1..5,test_batch}``,
``cifar-100-python/{train,test}``, ``train_32x32.mat`` and ``test_32x32.mat`` (SVHN).
Images are ``(N, 3, 32, 32)`` uint8; each dataset has its official test split. Labels: CIFAR's own ids
(CIFAR-100: the 100 fine classes), SVHN digit 0-9 (its ``10`` for zero mapped to 0).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import MissingData, Split, register_source
from bench.data.text import label_targets


def _root(spec: DataSpec) -> Path:
    raw = (spec.options.get("data_dir") or spec.options.get("root") or os.environ.get("BENCH_VISION_DIR")
           or "~/.cache/bench/vision")
    return Path(str(raw)).expanduser()


def _ensure(spec: DataSpec, name: str, needed: list[Path], tv_class: str, tv_kwargs: list[dict]) -> None:
    """Download with torchvision when allowed and something is missing; else a one-line MissingData."""
    if all(p.exists() for p in needed):
        return
    root = _root(spec)
    if spec.options.get("download"):
        import torchvision.datasets as tvd

        try:
            for kw in tv_kwargs:
                getattr(tvd, tv_class)(str(root), download=True, **kw)
        except (OSError, RuntimeError, ValueError) as e:  # no network, bad checksum
            raise MissingData(f"{name}: download into {root} failed ({type(e).__name__}); copy the files there "
                              "from a machine with internet") from None
        return
    missing = next(p for p in needed if not p.exists())
    raise MissingData(f"{name}: {missing} not found; set the data option download: true (needs internet) or "
                      f"copy torchvision's {name} files into {root} (data_dir=<dir> or BENCH_VISION_DIR)")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # the format torchvision reads; trusted local files only


def _cifar(folder: Path, files: list[str], key: str, tasks: list[TaskConfig]) -> Split:
    xs, ys = [], []
    for name in files:
        entry = _unpickle(folder / name)
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry[key], dtype=np.int64))
    return Split(np.concatenate(xs), label_targets(tasks, np.concatenate(ys)))


@register_source("cifar10")
def cifar10(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """CIFAR-10, 50,000 + 10,000 32x32 RGB, 10 classes (torchvision layout; option download)."""
    folder = _root(spec) / "cifar-10-batches-py"
    train = [f"data_batch_{i}" for i in range(1, 6)]
    _ensure(spec, "CIFAR-10", [folder / f for f in (*train, "test_batch")], "CIFAR10", [{"train": True}])
    return {"train": _cifar(folder, train, "labels", tasks), "test": _cifar(folder, ["test_batch"], "labels", tasks)}


@register_source("cifar100")
def cifar100(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """CIFAR-100, 50,000 + 10,000 32x32 RGB, 100 fine classes (torchvision layout; option download)."""
    folder = _root(spec) / "cifar-100-python"
    _ensure(spec, "CIFAR-100", [folder / "train", folder / "test"], "CIFAR100", [{"train": True}])
    return {"train": _cifar(folder, ["train"], "fine_labels", tasks),
            "test": _cifar(folder, ["test"], "fine_labels", tasks)}


@register_source("svhn")
def svhn(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """SVHN cropped digits, 73,257 + 26,032 32x32 RGB, 10 classes (torchvision layout; option download)."""
    from scipy.io import loadmat

    root = _root(spec)
    files = {"train": root / "train_32x32.mat", "test": root / "test_32x32.mat"}
    _ensure(spec, "SVHN", list(files.values()), "SVHN", [{"split": "train"}, {"split": "test"}])
    out = {}
    for split, path in files.items():
        mat = loadmat(path)
        x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        out[split] = Split(x, label_targets(tasks, y))
    return out
