"""Multi-label data: MNIST mosaics built from real digits, and the CelebA loader on files the test writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config import DataSpec, SplitConfig, SuiteConfig, TaskConfig
from bench.data.base import MissingData, load_suite_data
from bench.data.celeba import ATTRIBUTES, celeba
from bench.data.multilabel import CELL, DIGIT_LABELS, GRID, mnist_mosaic
from bench.data.vision import mnist5k_arrays
from bench.errors import BenchError

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def mosaics():
    return mnist_mosaic(DataSpec(source="mnist_mosaic"), [], SplitConfig())


@pytest.fixture(scope="module")
def sources():
    x, y = mnist5k_arrays()
    by_bytes: dict[bytes, list[int]] = {}
    for i, img in enumerate(x):
        by_bytes.setdefault(img.tobytes(), []).append(i)
    return x, y, by_bytes


def recover(image: np.ndarray, by_bytes: dict[bytes, list[int]]) -> list[list[int] | None]:
    """Which source digits sit in each cell, found by matching the cell's pixels (None: an empty cell)."""
    out: list[list[int] | None] = []
    for r in range(GRID):
        for c in range(GRID):
            cell = image[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL]
            if not cell.any():
                out.append(None)
                continue
            assert cell.tobytes() in by_bytes, "a cell that is not a whole source digit"
            out.append(by_bytes[cell.tobytes()])
    return out


def test_labels_are_the_digits_placed(mosaics, sources):
    x, y, by_bytes = sources
    for split in SPLITS:
        s = mosaics[split]
        assert s.inputs.dtype == np.uint8 and s.inputs.shape[1:] == (GRID * CELL, GRID * CELL)
        labels = s.targets["digits"]
        assert labels.dtype == np.int8 and labels.shape == (len(s), 10)
        for i in range(len(s)):
            found = recover(s.inputs[i], by_bytes)
            cells = [c for c in found if c is not None]
            # top_left: the digit in the first cell, no label (-1) when that cell is empty
            assert s.targets["top_left"][i] == (-1 if found[0] is None else int(y[found[0][0]]))
            # identical source images (if any) share a digit, so the label is recovered either way
            digits = {int(y[c[0]]) for c in cells}
            assert {int(y[j]) for c in cells for j in c} == digits
            expected = np.zeros(10, np.int8)
            expected[sorted(digits)] = 1
            np.testing.assert_array_equal(labels[i], expected)
            assert s.targets["count"][i] == len(cells) - 1
            for d, name in enumerate(DIGIT_LABELS):
                assert s.targets[name][i] == expected[d]


def test_no_source_digit_is_shared_between_splits(mosaics, sources):
    x, y, by_bytes = sources
    used = {}
    for split in SPLITS:
        used[split] = {j for img in mosaics[split].inputs for c in recover(img, by_bytes) if c for j in c}
    assert not used["train"] & used["validation"]
    assert not used["train"] & used["test"]
    assert not used["validation"] & used["test"]
    # every source digit is used, each exactly twice (repeats: 2) within its own split
    assert sum(len(u) for u in used.values()) == len(x)
    n_cells = sum(int((mosaics[s].targets["count"] + 1).sum()) for s in SPLITS)
    assert n_cells == 2 * len(x)
    assert len(used["test"]) == 1000 and len(used["validation"]) == 400  # 20% of 5,000; 10% of the rest


def _mosaic_suite(split_seed: int = 1234) -> SuiteConfig:
    tasks = [{"name": name, "input": "image", "target": "classification", "num_classes": 2}
             for name in ("digit_3", "digit_8")]
    tasks.append({"name": "count", "input": "image", "target": "classification", "num_classes": 4})
    return SuiteConfig(name="mosaic", kind="single_input", backbone={"source": "cnn"},
                       data={"source": "mnist_mosaic"}, tasks=tasks, split={"seed": split_seed})


def test_fingerprints_are_deterministic_and_follow_the_seed():
    first, again = load_suite_data(_mosaic_suite()), load_suite_data(_mosaic_suite())
    assert first.task_fingerprints == again.task_fingerprints
    assert {k: len(v) for k, v in first.splits["count"].items()} == {"train": 2872, "validation": 306, "test": 785}
    assert load_suite_data(_mosaic_suite(7)).fingerprint != first.fingerprint


def test_mosaic_errors_are_one_line():
    bad = TaskConfig(name="digit_11", input="image", target="classification", num_classes=2)
    with pytest.raises(BenchError, match=r"no label column 'digit_11' \(did you mean 'digit_1'\?\)") as e:
        mnist_mosaic(DataSpec(source="mnist_mosaic"), [bad], SplitConfig())
    assert "\n" not in str(e.value)
    with pytest.raises(BenchError, match="repeats=0 must be a whole number"):
        mnist_mosaic(DataSpec(source="mnist_mosaic", options={"repeats": 0}), [], SplitConfig())


# --- CelebA, on files in torchvision's layout -------------------------------------------------------------------

def write_celeba(root: Path, rows: list[tuple[str, int, list[int]]]) -> Path:
    """A tiny CelebA in torchvision's layout: (file, partition code, 40 values of ±1 or 0) per image."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    attr = [str(len(rows)), " ".join(ATTRIBUTES)]
    attr += [f"{name} " + " ".join(f"{v:2d}" for v in values) for name, _, values in rows]
    (folder / "list_attr_celeba.txt").write_text("\n".join(attr) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{name} {code}\n" for name, code, _ in rows))
    for k, (name, _, _) in enumerate(rows):
        # 178x218 like the aligned crops, one flat colour per image so the resize is exact
        Image.new("RGB", (178, 218), (10 * k, 100, 200)).save(folder / "img_align_celeba" / name, quality=95)
    return folder


def _values(k: int) -> list[int]:
    return [1 if (i + k) % 3 == 0 else -1 for i in range(len(ATTRIBUTES))]


@pytest.fixture
def celeba_dir(tmp_path):
    rows = [(f"{i:06d}.jpg", code, _values(i)) for i, code in enumerate([0, 0, 1, 2, 0, 2])]
    rows[1][2][5] = 0  # an attribute neither 1 nor -1: missing
    write_celeba(tmp_path, rows)
    return tmp_path


def test_celeba_reads_the_official_partition_and_attributes(celeba_dir):
    male = TaskConfig(name="Male", input="image", target="classification", num_classes=2)
    out = celeba(DataSpec(source="celeba", options={"data_dir": str(celeba_dir)}), [male], SplitConfig())
    assert {k: len(v) for k, v in out.items()} == {"train": 3, "validation": 1, "test": 2}
    train = out["train"]
    assert train.inputs.shape == (3, 3, 64, 64) and train.inputs.dtype == np.uint8
    # rows 0, 1, 4 of the files are the train partition, in file order
    # JPEG rounds a flat colour by a step or two
    np.testing.assert_allclose(train.inputs[:, :, 32, 32], [[0, 100, 200], [10, 100, 200], [40, 100, 200]], atol=3)
    expected = np.array([[1 if v == 1 else 0 for v in _values(k)] for k in (0, 1, 4)], dtype=np.int8)
    expected[1, 5] = -1
    np.testing.assert_array_equal(train.targets["attributes"], expected)
    np.testing.assert_array_equal(train.targets["Male"], expected[:, ATTRIBUTES.index("Male")])
    assert train.targets["Male"].dtype == np.int64
    np.testing.assert_array_equal(out["test"].targets["attributes"],
                                  [[1 if v == 1 else 0 for v in _values(k)] for k in (3, 5)])


def test_celeba_40_task_suite_loads_with_fingerprints(celeba_dir):
    tasks = [{"name": a, "input": "image", "target": "classification", "num_classes": 2} for a in ATTRIBUTES[:3]]
    suite = SuiteConfig(name="celeba", kind="single_input", backbone={"source": "cnn"}, tasks=tasks,
                        data={"source": "celeba", "options": {"data_dir": str(celeba_dir), "image_size": 16}})
    data = load_suite_data(suite)
    assert data.splits["Attractive"]["train"].inputs.shape == (3, 3, 16, 16)
    assert data.task_fingerprints == load_suite_data(suite).task_fingerprints


def test_celeba_missing_files_name_data_dir(tmp_path):
    with pytest.raises(MissingData) as e:
        celeba(DataSpec(source="celeba", options={"data_dir": str(tmp_path)}), [], SplitConfig())
    message = str(e.value)
    assert "\n" not in message and "data_dir=" in message and "list_attr_celeba.txt" in message


def test_celeba_missing_image_and_bad_names_are_one_line(celeba_dir):
    (celeba_dir / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(MissingData, match=r"000002\.jpg not found .*data_dir="):
        celeba(DataSpec(source="celeba", options={"data_dir": str(celeba_dir)}), [], SplitConfig())
    smile = TaskConfig(name="smile", label="Smilng", input="image", target="classification", num_classes=2)
    with pytest.raises(BenchError, match=r"no label column 'Smilng' \(did you mean 'Smiling'\?\)"):
        celeba(DataSpec(source="celeba", options={"data_dir": str(celeba_dir)}), [smile], SplitConfig())


def test_celeba_bad_option_is_one_line(celeba_dir):
    spec = DataSpec(source="celeba", options={"data_dir": str(celeba_dir), "max_per_split": "all"})
    with pytest.raises(BenchError, match=r"^CelebA: data option max_per_split='all' must be a whole number >= 1$"):
        celeba(spec, [], SplitConfig())


def test_celeba_max_per_split_reads_the_first_files(celeba_dir):
    spec = DataSpec(source="celeba", options={"data_dir": str(celeba_dir), "max_per_split": 2})
    out = celeba(spec, [], SplitConfig())
    assert {k: len(v) for k, v in out.items()} == {"train": 2, "validation": 1, "test": 2}
    np.testing.assert_allclose(out["train"].inputs[:, 0, 0, 0], [0, 10], atol=3)  # files 000000 and 000001
