"""NYUv2 / CityScapes loaders (bench/data/nyuv2.py) on small files in MTAN's .npy layout that the tests write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.config import DataSpec, SplitConfig, SuiteConfig, TaskConfig
from bench.data.base import SOURCES, MissingData, load_suite_data
from bench.data.nyuv2 import cityscapes, nyuv2
from bench.errors import BenchError
from bench.references import names

from .conftest import records, run_cli

HW = (16, 24)
SIZES = {"train": 6, "val": 4}


def write_layout(root: Path, labels: tuple[str, ...] = ("label",), normals: bool = True, exact: bool = True,
                 classes: int = 13, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Write ``root/{train,val}/{image,<labels>,depth[,normal]}/<i>.npy`` in the released layout (HWC, float64 here,
    label -1 = ignore, depth 0 = invalid, normal all-zero = invalid); return what was written, stacked."""
    rng = np.random.default_rng(seed)
    h, w = HW
    written: dict[str, dict[str, np.ndarray]] = {}
    for split, n in SIZES.items():
        k = rng.integers(0, 256, size=(n, h, w, 3))
        image = k / 255.0 if exact else rng.random((n, h, w, 3))
        label = rng.integers(-1, classes, size=(n, h, w)).astype(np.float64)
        depth = rng.uniform(0.5, 10.0, size=(n, h, w, 1))
        depth[:, :3] = 0.0  # no depth reading in the top rows
        normal = rng.normal(size=(n, h, w, 3))
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        normal[:, :, :2] = 0.0  # no normal in the left columns
        arrays = {"image": image, "depth": depth, **{folder: label for folder in labels}}
        if normals:
            arrays["normal"] = normal
        for folder, stack in arrays.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                np.save(root / split / folder / f"{i}.npy", stack[i])
        written[split] = arrays
    return written


def tasks(*columns: str) -> list[TaskConfig]:
    """One task per column, named after it, of the kind of the same name."""
    return [TaskConfig(name=c, input="image", target=c, num_classes=13 if c == "segmentation" else None)
            for c in columns]


def spec(root: Path, source: str = "nyuv2", **options) -> DataSpec:
    return DataSpec(source=source, options={"data_dir": str(root), **options})


@pytest.fixture
def nyu(tmp_path):
    return tmp_path, write_layout(tmp_path)


def test_nyuv2_columns_have_the_contract_shapes_and_conventions(nyu):
    root, written = nyu
    out = nyuv2(spec(root), tasks("segmentation", "depth", "normals"), SplitConfig())
    assert sorted(out) == ["test", "train"]  # val/ is the test split; validation is carved later
    for split, folder in (("train", "train"), ("test", "val")):
        s, w, n = out[split], written[folder], SIZES[folder]
        assert len(s) == n
        # k/255 images are stored exactly as uint8 (N, 3, H, W)
        assert s.inputs.dtype == np.uint8 and s.inputs.shape == (n, 3, *HW)
        np.testing.assert_array_equal(s.inputs, np.rint(np.moveaxis(w["image"], -1, 1) * 255).astype(np.uint8))
        seg = s.targets["segmentation"]
        assert seg.dtype == np.int64 and seg.shape == (n, *HW)
        np.testing.assert_array_equal(seg, w["label"].astype(np.int64))
        assert (seg == -1).any() and seg.max() <= 12
        depth = s.targets["depth"]
        assert depth.dtype == np.float32 and depth.shape == (n, *HW)
        np.testing.assert_array_equal(depth, w["depth"][..., 0].astype(np.float32))
        assert (depth[:, :3] == 0).all() and (depth[:, 3:] > 0).all()
        normals = s.targets["normals"]
        assert normals.dtype == np.float32 and normals.shape == (n, 3, *HW)
        np.testing.assert_array_equal(normals, np.moveaxis(w["normal"], -1, 1).astype(np.float32))
        assert (normals[:, :, :, :2] == 0).all()
        np.testing.assert_allclose(np.linalg.norm(normals[:, :, :, 2:], axis=1), 1.0, atol=1e-6)


def test_images_that_are_not_whole_bytes_stay_float32_as_stored(tmp_path):
    written = write_layout(tmp_path, exact=False)
    out = nyuv2(spec(tmp_path), tasks("depth"), SplitConfig())
    assert out["train"].inputs.dtype == np.float32
    np.testing.assert_array_equal(out["train"].inputs, np.moveaxis(written["train"]["image"], -1, 1).astype(np.float32))
    forced = nyuv2(spec(tmp_path, image_dtype="uint8"), tasks("depth"), SplitConfig())["train"].inputs
    assert forced.dtype == np.uint8
    assert np.abs(forced / 255.0 - np.moveaxis(written["train"]["image"], -1, 1)).max() <= 0.5 / 255 + 1e-9


def test_only_the_columns_asked_for_are_read_and_max_per_split(nyu):
    root, _ = nyu
    out = nyuv2(spec(root, max_per_split=2), [TaskConfig(name="seg", label="segmentation", input="image",
                                                          target="segmentation", num_classes=13)], SplitConfig())
    assert {k: len(v) for k, v in out.items()} == {"train": 2, "test": 2}
    assert sorted(out["train"].targets) == ["segmentation"]


def test_cityscapes_reads_label_7_or_the_classes_asked_for(tmp_path):
    written = write_layout(tmp_path, labels=("label_7", "label_19"), normals=False, classes=7)
    out = cityscapes(spec(tmp_path, "cityscapes"), tasks("segmentation", "depth"), SplitConfig())
    assert {k: len(v) for k, v in out.items()} == {"train": 6, "test": 4}
    np.testing.assert_array_equal(out["test"].targets["segmentation"], written["val"]["label_7"].astype(np.int64))
    nineteen = cityscapes(spec(tmp_path, "cityscapes", classes=19), tasks("segmentation"), SplitConfig())
    assert nineteen["train"].targets["segmentation"].shape == (6, *HW)
    with pytest.raises(BenchError, match=r"normals.*use one of segmentation, depth"):
        cityscapes(spec(tmp_path, "cityscapes"), tasks("normals"), SplitConfig())
    with pytest.raises(BenchError, match="classes=5 is not offered; use one of 7, 19, 2"):
        cityscapes(spec(tmp_path, "cityscapes", classes=5), tasks("segmentation"), SplitConfig())


def test_cityscapes_reads_libmtl_s_label_folder_as_the_7_classes(tmp_path):
    written = write_layout(tmp_path, labels=("label",), normals=False, classes=7)
    out = cityscapes(spec(tmp_path, "cityscapes"), tasks("segmentation"), SplitConfig())
    np.testing.assert_array_equal(out["train"].targets["segmentation"], written["train"]["label"].astype(np.int64))


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_absent_files_are_one_line_naming_data_dir_and_where_to_get_them(tmp_path, nyu, monkeypatch):
    monkeypatch.delenv("BENCH_NYUV2_DIR", raising=False)
    with pytest.raises(MissingData) as e:
        nyuv2(spec(tmp_path / "nowhere"), tasks("depth"), SplitConfig())
    text = one_line(e)
    assert f"data_dir {tmp_path / 'nowhere'} does not exist" in text and "BENCH_NYUV2_DIR" in text
    assert "dropbox.com/sh/86nssgwm6hm3vkb" in text
    root, _ = nyu
    (root / "train" / "depth" / "3.npy").unlink()
    with pytest.raises(MissingData) as e:
        nyuv2(spec(root), tasks("depth"), SplitConfig())
    assert "train/depth/3.npy is missing" in one_line(e)
    for f in (root / "val" / "normal").iterdir():
        f.unlink()
    (root / "val" / "normal").rmdir()
    with pytest.raises(MissingData) as e:
        nyuv2(spec(root), tasks("normals"), SplitConfig())
    assert "no folder val/normal under data_dir" in one_line(e)


def test_malformed_files_are_one_line_errors(nyu):
    root, written = nyu
    np.save(root / "train" / "label" / "2.npy", np.full(HW, 13.0))
    with pytest.raises(BenchError) as e:
        nyuv2(spec(root), tasks("segmentation"), SplitConfig())
    assert "class id 13 in a 13-class labelling" in one_line(e)
    np.save(root / "train" / "label" / "2.npy", np.full(HW, 0.5))
    with pytest.raises(BenchError, match="must be whole numbers"):
        nyuv2(spec(root), tasks("segmentation"), SplitConfig())
    np.save(root / "train" / "depth" / "1.npy", np.zeros((8, 8, 1)))
    with pytest.raises(BenchError) as e:
        nyuv2(spec(root), tasks("depth"), SplitConfig())
    assert "1.npy: shape (8, 8, 1), expected (16, 24, 1)" in one_line(e)
    with pytest.raises(BenchError, match="image_dtype='int8'; use one of auto, uint8, float32"):
        nyuv2(spec(root, image_dtype="int8"), tasks("normals"), SplitConfig())
    with pytest.raises(BenchError, match="has no label column 'normal' .*did you mean 'normals'"):
        nyuv2(spec(root), [TaskConfig(name="normal", input="image", target="normals")], SplitConfig())


@pytest.mark.parametrize("name, reference, source", [("nyuv2", "nyuv2_nash_mtl", "nyuv2"),
                                                     ("cityscapes", "cityscapes_nash_mtl", "cityscapes")])
def test_suite_files_name_their_source_and_published_table(name, reference, source):
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "suites" / f"{name}.yaml").read_text())
    suite = SuiteConfig(**raw)
    assert suite.data.source == source and source in SOURCES
    assert suite.reference == reference and reference in names()
    assert suite.backbone.options["create"] == {"output_stride": 8} and suite.backbone.options["keep_size"] is True
    assert (suite.train.epochs, suite.train.lr) == (200, 1e-4)
    assert all(t.head == {"decoder": "aspp"} for t in suite.tasks)  # LibMTL's DeepLabHead per task


NINE = {"segmentation": ["miou", "pixel_acc"], "depth": ["abs_err", "rel_err"],
        "normals": ["mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"]}


def suite_on(root: Path, name: str = "nyuv2") -> SuiteConfig:
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "suites" / f"{name}.yaml").read_text())
    raw["data"]["options"]["data_dir"] = str(root)
    return SuiteConfig(**raw)


def test_the_suite_s_splits_are_train_less_a_carved_validation_and_val_as_test(nyu):
    root, written = nyu
    data = load_suite_data(suite_on(root))
    splits = data.splits["segmentation"]
    # 6 train files: 20% (split.validation) carved off, seeded; the 4 val files are the test split, in file order
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "validation": 2, "test": 4}
    np.testing.assert_array_equal(splits["test"].targets["depth"], written["val"]["depth"][..., 0].astype(np.float32))
    assert data.fingerprint == load_suite_data(suite_on(root)).fingerprint


def test_the_cityscapes_suite_reads_label_7_and_depth_with_a_10_percent_validation(tmp_path):
    written = write_layout(tmp_path, labels=("label_7",), normals=False, classes=7)
    splits = load_suite_data(suite_on(tmp_path, "cityscapes")).splits["depth"]
    assert {k: len(v) for k, v in splits.items()} == {"train": 5, "validation": 1, "test": 4}
    assert sorted(splits["test"].targets) == ["depth", "segmentation"]
    np.testing.assert_array_equal(splits["test"].targets["segmentation"], written["val"]["label_7"].astype(np.int64))


@pytest.mark.slow
def test_nyuv2_suite_runs_end_to_end_on_the_fixture_with_its_published_table(nyu, results):
    root, _ = nyu
    out = run_cli("run", "suite=nyuv2", f"data_dir={root}", "strategy=naive_mtl", "train.epochs=1",
                  "backbone.name=resnet18", "backbone.pretrained=false", "train.batch_size=2",
                  f"results_dir={results}", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (rec,) = records(results)
    test = rec["rows"]["naive_mtl"]["metrics"]["test"]
    assert {task: list(values) for task, values in test.items()} == NINE
    assert all(np.isfinite(v) for values in test.values() for v in values.values())
    assert 0 <= test["segmentation"]["miou"] <= 1 and test["normals"]["within_30"] <= 1
    report = results / "nyuv2" / "report"
    md = (report / "leaderboard.md").read_text()
    assert "## Published: NYUv2, 3 tasks, SegNet-MTAN: Nash-MTL's comparison" in md  # the suite's reference:
    assert (report / "dense_test.png").is_file()
    out = run_cli("report", "suite=nyuv2", f"results_dir={results}", "reference=nyuv2_famo")
    assert out.returncode == 0, out.stderr[-3000:]
    md = (report / "leaderboard.md").read_text()
    assert "## Published: NYUv2, 3 tasks, SegNet-MTAN: FAMO's comparison" in md
    assert "| _FAMO_ | 38.88 | 64.90 | 0.5474 | 0.2194 | 25.06 | 19.57 | 29.21 | 56.61 | 68.98 | -4.10 |" in md
