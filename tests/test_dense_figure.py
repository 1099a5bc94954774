"""The dense suite's figure (``dense_<split>``): images in rows; the input, then per dense task its ground truth and
each leaderboard row's prediction; colours of labels, depth and normals; no figure for a suite without dense tasks.

Records and their ``predictions.npz`` (with the ``preview_*`` arrays a dense kind and the evaluation loop keep) are
written by hand into tmp_path, so nothing here trains.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps

from bench.config import TaskConfig
from bench.report import write_report
from bench.report.plots.dense import (
    PALETTE,
    SCALAR_MAP,
    dense_figure,
    input_rgb,
    label_rgb,
    map_style,
    scalar_range,
    scalar_rgb,
    vector_rgb,
)
from bench.report.previews import dense_previews
from bench.report.records import load_records
from bench.stages.predictions import save_predictions
from bench.stats import recipes_of
from bench.tasks import task_kind

SUITE = "dense_toy"
K, H, W, CLASSES = 4, 6, 8, 5
N = 10  # examples of the test split (the previews are the first K)
#: per task: its spec in the record (directions as the dense kinds declare them) and its per-example stats
TASKS = {
    "segmentation": {"target": "segmentation", "primary": "miou", "metrics": {"miou": "max", "pixel_acc": "max"},
                     "stats": [*(f"inter{c}" for c in range(CLASSES)), *(f"union{c}" for c in range(CLASSES)),
                               "correct", "valid"],
                     "recipes": {"miou": {"ratios": [{"num": {f"inter{c}": 1}, "den": {f"union{c}": 1}}
                                                     for c in range(CLASSES)], "bounds": [0, 1]},
                                 "pixel_acc": {"ratios": [{"num": {"correct": 1}, "den": {"valid": 1}}],
                                               "bounds": [0, 1]}}},
    "depth": {"target": "depth", "primary": "abs_err", "metrics": {"abs_err": "min", "rel_err": "min"},
              "stats": ["abs_sum", "rel_sum", "valid"],
              "recipes": {"abs_err": {"ratios": [{"num": {"abs_sum": 1}, "den": {"valid": 1}}]},
                          "rel_err": {"ratios": [{"num": {"rel_sum": 1}, "den": {"valid": 1}}]}}},
    "normals": {"target": "normals", "primary": "mean_angle", "metrics": {"mean_angle": "min", "within_30": "max"},
                "stats": ["angle_sum", "within_30", "valid"],
                "recipes": {"mean_angle": {"ratios": [{"num": {"angle_sum": 1}, "den": {"valid": 1}}]},
                            "within_30": {"ratios": [{"num": {"within_30": 1}, "den": {"valid": 1}}],
                                          "bounds": [0, 1]}}},
}


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def ground_truth() -> dict[str, np.ndarray]:
    """The test split's maps (the same for every row and seed): labels with ignored pixels (-1), depth with invalid
    pixels (0), unit normals with invalid pixels (all-zero vectors)."""
    rng = np.random.default_rng(0)
    seg = rng.integers(0, CLASSES, size=(N, H, W))
    seg[:, 0, :2] = -1
    depth = rng.uniform(1.0, 4.0, size=(N, H, W)).astype(np.float32)
    depth[:, -1, -2:] = 0.0
    normals = rng.normal(size=(N, 3, H, W))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    normals[:, :, 0, 0] = 0.0
    return {"segmentation": seg, "depth": depth, "normals": normals.astype(np.float32)}


def predicted(truth: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    seg = np.where(rng.random(truth["segmentation"].shape) < 0.7, truth["segmentation"],
                   rng.integers(0, CLASSES, size=truth["segmentation"].shape)).clip(0)
    depth = (truth["depth"] + rng.normal(0, 0.3, size=truth["depth"].shape)).astype(np.float32)
    normals = truth["normals"] + rng.normal(0, 0.2, size=truth["normals"].shape)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return {"segmentation": seg, "depth": depth, "normals": normals.astype(np.float32)}


def per_example_stats(task: str, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The stats columns of TASKS[task] per example (what the recipes compute the metrics from)."""
    if task == "segmentation":
        valid = target >= 0
        inter = [((pred == c) & (target == c)).sum(axis=(1, 2)) for c in range(CLASSES)]
        union = [(((pred == c) & valid) | (target == c)).sum(axis=(1, 2)) for c in range(CLASSES)]
        cols = [*inter, *union, ((pred == target) & valid).sum(axis=(1, 2)), valid.sum(axis=(1, 2))]
    elif task == "depth":
        valid = target > 0
        err = np.abs(pred - target) * valid
        cols = [err.sum(axis=(1, 2)), (err / np.where(valid, target, 1)).sum(axis=(1, 2)), valid.sum(axis=(1, 2))]
    else:
        valid = np.abs(target).sum(axis=1) > 0
        cos = np.clip((pred * target).sum(axis=1), -1, 1)
        angle = np.degrees(np.arccos(cos)) * valid
        cols = [angle.sum(axis=(1, 2)), ((angle < 30) & valid).sum(axis=(1, 2)), valid.sum(axis=(1, 2))]
    return np.stack(cols, axis=1).astype(float)


def write_dense_record(results: Path, strategy: str, seed: int, *, tasks: dict | None = None,
                       arrays: dict[str, np.ndarray] | None = None, metrics: dict | None = None,
                       suite: str = SUITE) -> dict:
    """One schema-3 record of ``suite`` (test split) and, with ``arrays`` (npz key -> array), its
    ``predictions.npz``; ``metrics`` (task -> metric -> value) default to the recipes on the stored stats."""
    tasks = tasks or TASKS
    train = {"epochs": 1, "batch_size": 8, "lr": 0.01}
    config = {"suite": {"name": suite, "kind": "single_input", "train": train, "backbone": {"name": "cnn"},
                        "tasks": list(tasks)}, "strategy": strategy, "params": {}, "budget_match": "none"}
    fingerprint = _hash(config)
    key = _hash([strategy, seed, fingerprint])
    rel = f"stages/evaluate/{key}/predictions.npz"
    if metrics is None:
        metrics = {t: {m: r.value(arrays[f"test/{t}/stats"]) for m, r in recipes_of(spec).items()}
                   for t, spec in tasks.items()}
    if arrays is not None:
        path = results / suite / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    record = {
        "schema_version": 3, "suite": suite, "strategy": strategy, "label": strategy, "params": {}, "seed": seed,
        "cell": key, "config": config, "config_fingerprint": fingerprint,
        "budget_fingerprint": _hash(train), "data_fingerprint": "data0000", "code_version": "0.2.0+gtest",
        "backbone": "cnn", "tasks": tasks, "train": train, "created": "2026-12-01T00:00:00Z", "status": "complete",
        "rows": {strategy: {
            "metrics": {"test": metrics}, "best_epoch": {},
            "telemetry": {"wall_time_s": 10.0, "train_samples_per_s": 100.0, "peak_memory_mb": 300.0,
                          "memory_kind": "host_rss", "trainable_params": 2000},
            "budget": {"train_samples_seen": 400, "optimizer_steps": 50, "epochs": 1.0},
            "predictions": {"test": {t: rel for t in tasks}} if arrays is not None else {},
            "stages": [{"stage": "evaluate", "key": key, "reused": False, "code_version": "0.2.0+gtest",
                        "impl_version": 1, "versions": {}}],
            "code_versions": ["0.2.0+gtest"]}},
    }
    folder = results / suite / "cells" / strategy / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps(record))
    return record


def dense_arrays(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], previews: bool = True,
                 image: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """predictions.npz of one seed: per task id, target and pred (per example; here the example index, as dense
    kinds keep their maps only in the previews), the stats and, with ``previews``, the first K maps and images."""
    image = image if image is not None else np.random.default_rng(5).integers(0, 256, size=(K, 3, H, W),
                                                                               dtype=np.uint8)
    out = {}
    for task in TASKS:
        out |= {f"test/{task}/id": np.arange(N), f"test/{task}/target": np.arange(N),
                f"test/{task}/pred": np.arange(N),
                f"test/{task}/stats": per_example_stats(task, truth[task], pred[task])}
        if previews:
            out |= {f"test/{task}/preview_input": image, f"test/{task}/preview_target": truth[task][:K],
                    f"test/{task}/preview_pred": pred[task][:K]}
    return out


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, dict]:
    """separate and naive_mtl, seeds 0 and 1 (naive_mtl's seed 1 stored first): returns the store and every
    (row, seed)'s predicted maps."""
    results, truth, preds = tmp_path / "results", ground_truth(), {}
    for strategy in ("separate", "naive_mtl"):
        for seed in (1, 0):
            preds[(strategy, seed)] = predicted(truth, np.random.default_rng([seed, len(strategy)]))
            write_dense_record(results, strategy, seed, arrays=dense_arrays(preds[(strategy, seed)], truth))
    return results, preds


# ----------------------------------------------------------------------------------------------- colours


def test_the_palette_draws_ignored_pixels_black_and_no_class_black():
    rgb = label_rgb(np.array([[-1, 0], [1, 21]]))
    assert rgb[0, 0].tolist() == [0.0, 0.0, 0.0]
    assert rgb[0, 1].tolist() == PALETTE[0].tolist() and rgb[1, 0].tolist() == PALETTE[1].tolist()
    assert rgb[1, 1].tolist() == PALETTE[21 % len(PALETTE)].tolist()
    assert len(PALETTE) == 20 and (PALETTE.sum(axis=1) > 0.5).all()  # no class is (near) black
    assert len({tuple(c) for c in PALETTE}) == 20


def test_normals_are_drawn_as_n_plus_one_over_two_and_invalid_ones_black():
    n = np.zeros((3, 1, 4))
    n[:, 0, 0] = (0, 0, 1)
    n[:, 0, 1] = (-1, 0, 0)
    n[:, 0, 3] = (np.nan, 0, 1)
    rgb = vector_rgb(n)
    assert rgb[0, 0].tolist() == [0.5, 0.5, 1.0]
    assert rgb[0, 1].tolist() == [0.0, 0.5, 0.5]
    assert rgb[0, 2].tolist() == [0.0, 0.0, 0.0]  # the all-zero vector: no label
    assert rgb[0, 3].tolist() == [0.0, 0.0, 0.0]


def test_depth_shares_the_ground_truths_valid_range_and_draws_invalid_truth_black():
    truth = np.array([[0.0, 1.0, 3.0, np.nan]])
    lo, hi = scalar_range(truth)
    assert (lo, hi) == (1.0, 3.0)  # 0 and NaN are invalid pixels
    cmap = colormaps[SCALAR_MAP]
    rgb = scalar_rgb(truth, lo, hi, invalid_zero=True)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 3].tolist() == [0, 0, 0]
    assert np.allclose(rgb[0, 1], cmap(0.0)[:3]) and np.allclose(rgb[0, 2], cmap(1.0)[:3])
    pred = scalar_rgb(np.array([[0.0, 2.0, 9.0]]), lo, hi)  # a prediction: 0 is a value, clipped to the range
    assert np.allclose(pred[0, 0], cmap(0.0)[:3]) and np.allclose(pred[0, 1], cmap(0.5)[:3])
    assert np.allclose(pred[0, 2], cmap(1.0)[:3])


def test_map_style_and_input_images():
    assert map_style(np.zeros((2, 4, 4), dtype=np.int16)) == "labels"
    assert map_style(np.zeros((2, 3, 4, 4), dtype=np.float16)) == "vectors"
    assert map_style(np.zeros((2, 1, 4, 4), dtype=np.float32)) == "scalar"
    assert map_style(np.zeros((2, 4, 4), dtype=np.float32)) == "scalar"
    assert input_rgb(np.full((3, 2, 2), 255, dtype=np.uint8)).tolist() == np.ones((2, 2, 3)).tolist()
    grey = input_rgb(np.array([[[-2.0, 2.0]]]))  # normalised floats: stretched, one channel repeated
    assert grey.shape == (1, 2, 3) and grey[0, 0].tolist() == [0, 0, 0] and grey[0, 1].tolist() == [1, 1, 1]


# ----------------------------------------------------------------------------------------------- the figure


@pytest.mark.integration
def test_report_writes_the_dense_figure_with_images_in_rows_and_truth_and_rows_in_columns(store, tmp_path):
    results, preds = store
    paths = write_report(results, SUITE, tmp_path / "report")
    assert paths["dense_test_png"].is_file() and paths["dense_test_pdf"].is_file()
    assert paths["dense_test_png"] == tmp_path / "report" / "dense_test.png"

    previews = dense_previews(load_records(results, SUITE), ["separate", "naive_mtl"], "test")
    assert [t.task for t in previews.tasks] == list(TASKS) and previews.images == K
    assert previews.seeds == {"separate": 0, "naive_mtl": 0}
    fig = dense_figure(previews, SUITE, ["naive_mtl", "separate"])
    assert len(fig.axes) == K * (1 + len(TASKS) * (1 + 2))  # input, then per task: truth, naive_mtl, separate
    groups = fig.subfigs
    assert [g.get_suptitle() for g in groups] == [" ", *TASKS]
    seg = groups[1].axes
    assert [ax.get_title() for ax in seg[:3]] == ["ground truth", "naive_mtl", "separate"]
    # image row 2 of segmentation: the truth (ignored pixels black), then naive_mtl's LOWEST seed's map
    truth = ground_truth()
    row2 = seg[2 * 3:3 * 3]
    assert np.array_equal(row2[0].get_images()[0].get_array(), label_rgb(truth["segmentation"][2]))
    assert row2[0].get_images()[0].get_array()[0, 0].tolist() == [0, 0, 0]
    assert np.array_equal(row2[1].get_images()[0].get_array(),
                          label_rgb(preds[("naive_mtl", 0)]["segmentation"][2]))
    # normals: RGB = (n + 1) / 2 of the stored map
    normals = groups[3].axes
    assert np.allclose(normals[3 * 3 + 2].get_images()[0].get_array(),
                       vector_rgb(preds[("separate", 0)]["normals"][3]))
    # the input column: the stored uint8 images
    assert np.allclose(groups[0].axes[1].get_images()[0].get_array(), input_rgb(
        np.random.default_rng(5).integers(0, 256, size=(K, 3, H, W), dtype=np.uint8)[1]))


@pytest.mark.integration
def test_no_dense_figure_for_a_suite_without_previews(tmp_path):
    results, truth = tmp_path / "results", ground_truth()
    for strategy in ("separate", "naive_mtl"):
        pred = predicted(truth, np.random.default_rng(len(strategy)))
        write_dense_record(results, strategy, 0, arrays=dense_arrays(pred, truth, previews=False))
    paths = write_report(results, SUITE, tmp_path / "report")
    assert "bars_test_png" in paths and not any(k.startswith("dense") for k in paths)
    assert not list((tmp_path / "report").glob("dense*"))
    assert dense_previews(load_records(results, SUITE), ["separate", "naive_mtl"], "test") is None


def test_a_row_that_previews_other_examples_gets_empty_cells_and_a_reason(tmp_path):
    results, truth = tmp_path / "results", ground_truth()
    pred = predicted(truth, np.random.default_rng(0))
    write_dense_record(results, "separate", 0, arrays=dense_arrays(pred, truth))
    other = {t: np.roll(v, 1, axis=0) for t, v in truth.items()}  # other examples first
    write_dense_record(results, "naive_mtl", 0, arrays=dense_arrays(pred, other))
    previews = dense_previews(load_records(results, SUITE), ["separate", "naive_mtl"], "test")
    assert previews.tasks[0].preds["naive_mtl"] == "seed 0 previews other segmentation examples"
    fig = dense_figure(previews, SUITE)
    assert fig.subfigs[1].axes[2].get_images() == []  # truth, separate, naive_mtl: the last is empty
    assert "naive_mtl: seed 0 previews other segmentation examples" in fig.get_suptitle()


# ----------------------------------------------------------------------------------------------- the real kinds


def kind_store(results: Path, rows: tuple[str, ...] = ("separate", "naive_mtl"), seeds: tuple[int, ...] = (0, 1)
               ) -> dict:
    """Records whose predictions.npz hold what the dense kinds' ``score()`` keeps (stats, int8 / float16 previews)
    plus the ``preview_input`` the evaluation loop adds, written by :func:`save_predictions`; returns the kinds."""
    truth = ground_truth()
    kinds = {t: task_kind(TaskConfig(name=t, input="image", target=t,
                                     **({"num_classes": CLASSES} if t == "segmentation" else {})))
             for t in TASKS}
    tasks = {t: {"target": k.name, "primary": k.primary, "metrics": {m: k.direction(m) for m in k.metric_names},
                 **k.record_spec()} for t, k in kinds.items()}
    image = np.random.default_rng(5).integers(0, 256, size=(K, 3, H, W), dtype=np.uint8)
    for strategy in rows:
        for seed in seeds:
            pred = predicted(truth, np.random.default_rng([seed, len(strategy)]))
            metrics, kept = {}, {}
            for t, kind in kinds.items():
                metrics[t], kept[t] = kind.score(truth[t], pred[t])
                kept[t]["preview_input"] = image
            record = write_dense_record(results, strategy, seed, tasks=tasks, metrics=metrics)
            rel = f"stages/evaluate/{record['cell']}"
            (results / SUITE / rel).mkdir(parents=True, exist_ok=True)
            save_predictions(results / SUITE / rel, {"test": kept})
            path = next((results / SUITE / "cells" / strategy).glob(f"{record['cell']}/record.json"))
            record["rows"][strategy]["predictions"] = {"test": {t: f"{rel}/predictions.npz" for t in TASKS}}
            path.write_text(json.dumps(record))
    return kinds


@pytest.mark.integration
def test_the_figure_draws_what_the_dense_kinds_keep(tmp_path):
    kind_store(tmp_path)
    previews = dense_previews(load_records(tmp_path, SUITE), ["separate", "naive_mtl"], "test")
    stored = {tp.task: tp for tp in previews.tasks}
    assert [map_style(stored[t].target) for t in TASKS] == ["labels", "scalar", "vectors"]
    assert stored["segmentation"].target.dtype == np.int8 and (stored["segmentation"].target == -1).any()
    assert stored["depth"].preds["naive_mtl"].dtype == np.float16 and previews.inputs.dtype == np.uint8
    fig = dense_figure(previews, SUITE, ["separate", "naive_mtl"])
    assert len(fig.axes) == K * (1 + 3 * 3)
    truth = fig.subfigs[1].axes[0].get_images()[0].get_array()
    assert truth[0, 0].tolist() == [0, 0, 0]  # the ignored pixel of the int8 map
    normals = fig.subfigs[3].axes[0].get_images()[0].get_array()
    assert normals[0, 0].tolist() == [0, 0, 0]  # the all-zero (invalid) normal
    depth = fig.subfigs[2].axes[0].get_images()[0].get_array()
    assert depth[-1, -1].tolist() == [0, 0, 0]  # the 0 (invalid) depth
