"""The offline data sources: documented sizes and classes, deduplication, fixed splits, optional and online data."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

import bench.data.online_vision as online
from bench.config import DataSpec, SplitConfig, SuiteConfig, TaskConfig
from bench.data import files, glue, text, vision  # noqa: F401  (files, glue: registered for the suite check)
from bench.data.base import MissingData, load_suite_data
from bench.errors import BenchError

pytestmark = pytest.mark.integration

SUITES = Path(__file__).resolve().parent.parent / "suites"


def task(name="t", k=10, source=None, **kw) -> TaskConfig:
    data = DataSpec(source=source, options=kw.pop("options", {})) if source else None
    return TaskConfig(name=name, input=kw.pop("input", "text"), target="classification", num_classes=k, data=data,
                      **kw)


def load(source: str, k: int, options: dict | None = None, **kw):
    return getattr(text if hasattr(text, source) else vision, source)(
        DataSpec(source=source, options=options or {}), [task(k=k, **kw)], SplitConfig())


# -- text ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source,k,size,counts", [
    ("bbc_news", 5, 2125, [503, 369, 403, 503, 347]),
    ("tweet_sentiment", 3, 37185, [15954, 14424, 6807]),
    ("trump_device", 2, 8593, [4640, 3953]),
])
def test_text_sources_documented_sizes_and_classes(source, k, size, counts):
    out = load(source, k)
    assert set(out) == {"train"}  # no official split: load_suite_data carves validation and test
    s = out["train"]
    assert len(s) == size and np.bincount(s.targets["t"]).tolist() == counts
    assert s.targets["t"].dtype == np.int64
    assert s.inputs == sorted(s.inputs)  # deterministic order -> stable fingerprint
    assert len(set(s.inputs)) == len(s.inputs)  # deduplicated
    assert all("\n" not in x and "  " not in x for x in s.inputs[:200])  # whitespace normalised


def test_bbc_class_ids_follow_the_documented_names():
    s = load("bbc_news", 5)["train"]
    sport = [x for x, y in zip(s.inputs, s.targets["t"]) if y == text.BBC_CLASSES.index("sport")]
    assert text.BBC_CLASSES == ("business", "entertainment", "politics", "sport", "tech")
    assert sum(any(w in x.lower() for w in ("match", "cup", "coach", "champion")) for x in sport) > 0.8 * len(sport)


def test_dedup_keeps_one_copy_and_drops_conflicts():
    x, y = text.dedup_sorted(["b", "a", "b", "c", "c", ""], [1, 0, 1, 0, 1, 0])
    assert x == ["a", "b"] and y.tolist() == [0, 1]  # "c" has two labels: dropped; "" dropped


def text_suite(*sources) -> SuiteConfig:
    tasks = [task(name=s, k=k, source=s) for s, k in sources]
    return SuiteConfig(name="t", backbone={"source": "transformers"}, tasks=tasks)


def test_fixed_splits_have_a_stable_fingerprint():
    suite = text_suite(("bbc_news", 5), ("trump_device", 2))
    a, b = load_suite_data(suite), load_suite_data(suite)
    assert a.fingerprint == b.fingerprint and a.task_fingerprints == b.task_fingerprints
    s = a.splits["bbc_news"]
    assert {k: len(v) for k, v in s.items()} == {"train": 1530, "validation": 170, "test": 425}
    assert not set(s["train"].inputs) & set(s["test"].inputs)
    assert s["validation"].inputs == b.splits["bbc_news"]["validation"].inputs


def test_text_suite_file_validates_and_names_offline_sources():
    raw = yaml.safe_load((SUITES / "text.yaml").read_text())
    suite = SuiteConfig(**raw)
    assert suite.name == "text" and suite.backbone.name == "minilm" and suite.budget_note
    assert [t.data.source for t in suite.tasks] == ["bbc_news", "tweet_sentiment", "trump_device"]
    assert [t.num_classes for t in suite.tasks] == [5, 3, 2]


@pytest.mark.parametrize("name", ["text", "vision", "vision_single", "glue", "cifar"])
def test_suite_files_validate(name):
    from bench.data.base import SOURCES

    suite = SuiteConfig(**yaml.safe_load((SUITES / f"{name}.yaml").read_text()))
    specs = [suite.data] if suite.data else [t.data for t in suite.tasks]
    assert all(s.source in SOURCES for s in specs)


# -- vision ----------------------------------------------------------------------------------------------------------

def test_mnist5k_and_digits_are_uint8_images():
    m = load("mnist5k", 10, input="image")["train"]
    assert m.inputs.shape == (5000, 28, 28) and m.inputs.dtype == np.uint8
    assert np.bincount(m.targets["t"]).tolist() == [500] * 10
    d = load("digits", 10, input="image")["train"]
    assert d.inputs.shape == (1797, 8, 8) and d.inputs.dtype == np.uint8
    assert d.inputs.max() == 255 and d.inputs.min() == 0


def test_mnist_multilabel_columns_agree_with_the_digit():
    tasks = [task(name=n, k=k, label=n, input="image") for n, k in (("digit", 10), ("parity", 2), ("ge5", 2))]
    suite = SuiteConfig(name="s", kind="single_input", backbone={"source": "cnn"},
                        data=DataSpec(source="mnist_multilabel"), tasks=tasks)
    data = load_suite_data(suite)
    val = data.splits["digit"]["validation"]
    assert data.splits["parity"] is data.splits["digit"]  # one shared Split set
    assert (val.targets["parity"] == val.targets["digit"] % 2).all()
    assert (val.targets["ge5"] == (val.targets["digit"] >= 5)).all()
    assert len(val) == 400 and len(data.splits["digit"]["test"]) == 1000


def test_mnist_multilabel_unknown_label_names_the_columns():
    with pytest.raises(BenchError, match="no label column 'loops'; set label: to one of digit, parity, ge5"):
        vision.mnist_multilabel(DataSpec(source="mnist_multilabel"), [task(name="x", label="loops", input="image")],
                                SplitConfig())


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    out = load("fashion_mnist", 10, options={"data_dir": str(tmp_path)}, input="image")
    assert set(out) == {"train", "test"}
    assert out["train"].inputs.shape == (30, 28, 28) and out["test"].targets["t"].tolist() == list(range(10))


def test_fashion_mnist_absent_is_a_one_line_apt_note_and_optional_tasks_are_skipped(tmp_path):
    with pytest.raises(MissingData) as err:
        load("fashion_mnist", 10, options={"data_dir": str(tmp_path)}, input="image")
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "\n" not in str(err.value)
    tasks = [task(name="digits", source="digits", input="image"),
             task(name="fashion", source="fashion_mnist", input="image", optional=True,
                  options={"data_dir": str(tmp_path)})]
    data = load_suite_data(SuiteConfig(name="v", backbone={"source": "cnn"}, tasks=tasks))
    assert data.task_names == ["digits"] and "fashion" in data.notes[0] and "apt-get" in data.notes[0]


# -- online vision (torchvision layout, tiny files written here) ------------------------------------------------------

def test_cifar10_and_cifar100_read_torchvision_pickles(tmp_path):
    rng = np.random.default_rng(0)
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(c10 / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}, f)
    out = online.cifar10(DataSpec(source="cifar10", options={"data_dir": str(tmp_path)}), [task()], SplitConfig())
    assert out["train"].inputs.shape == (20, 3, 32, 32) and out["test"].targets["t"].tolist() == [0, 1, 2, 9]
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for name in ("train", "test"):
        with open(c100 / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "fine_labels": [5, 50, 99],
                         "coarse_labels": [0, 1, 2]}, f)
    out = online.cifar100(DataSpec(source="cifar100", options={"data_dir": str(tmp_path)}), [task(k=100)],
                          SplitConfig())
    assert out["test"].targets["t"].tolist() == [5, 50, 99]


def test_svhn_reads_mat_files_and_maps_ten_to_zero(tmp_path):
    from scipy.io import savemat

    for split in ("train", "test"):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": np.zeros((32, 32, 3, 3), np.uint8),
                                                   "y": np.array([[10], [1], [9]], np.uint8)})
    out = online.svhn(DataSpec(source="svhn", options={"data_dir": str(tmp_path)}), [task()], SplitConfig())
    assert out["train"].inputs.shape == (3, 3, 32, 32) and out["train"].targets["t"].tolist() == [0, 1, 9]


def test_online_vision_without_files_is_one_line(tmp_path):
    with pytest.raises(MissingData) as err:
        online.cifar10(DataSpec(source="cifar10", options={"data_dir": str(tmp_path)}), [task()], SplitConfig())
    msg = str(err.value)
    assert "download: true" in msg and str(tmp_path) in msg and "\n" not in msg
