"""The ``scenes`` source: exact geometry against analytic values, texture that leaves geometry alone, fixed seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.config import DataSpec, SplitConfig, SuiteConfig, TaskConfig
from bench.data.base import fingerprint_split, load_suite_data
from bench.data.scenes import scene_splits, scenes
from bench.data.scenes_render import BOX, CYLINDER, FLOOR, PICTURE, SPHERE, WALL, Scenes, camera_rays, render
from bench.errors import BenchError
from bench.suites import find_suite, read_suite_yaml, validate_suite

SIZE, HFOV = 64, np.pi / 3
F = (SIZE / 2) / np.tan(HFOV / 2)  # focal length in pixels
BANK = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8),
                 np.tile(np.array([0, 255], np.uint8), (28, 14))])  # blank, full ink, stripes


def one_scene(objects: list[tuple[int, tuple, tuple, float]] = (), height: float = 1.5, pitch: float = 0.0,
              yaw: float = 0.0, wall: float = 8.0, pictures: list[tuple[int, tuple]] = (), contrast: float = 0.0,
              digit: int = 0) -> Scenes:
    """A single scene: objects (kind, centre, size, angle), pictures (FLOOR | WALL, rect); grey surfaces lit head on."""
    m, p = max(len(objects), 1), max(len(pictures), 1)
    kind, center, size, angle = np.full((1, m), -1), np.zeros((1, m, 3)), np.ones((1, m, 3)), np.zeros((1, m))
    for i, (k, c, s, a) in enumerate(objects):
        kind[0, i], center[0, i], size[0, i], angle[0, i] = k, c, s, a
    pic_on, pic_rect = np.full((1, p), -1), np.zeros((1, p, 4))
    for i, (on, rect) in enumerate(pictures):
        pic_on[0, i], pic_rect[0, i] = on, rect
    s = 2 + m + p
    return Scenes(height=np.array([height]), pitch=np.array([pitch]), yaw=np.array([yaw]), wall=np.array([wall]),
                  light=np.array([[0.0, 0.0, -1.0]]), ambient=np.array([0.2]), kind=kind, center=center, size=size,
                  angle=angle, pic_on=pic_on, pic_rect=pic_rect, digit=np.full((1, s), digit),
                  tiles=np.full((1, 4), digit), base=np.full((1, s, 3), 0.5), paint=np.ones((1, s, 3)),
                  contrast=np.full((1, s), contrast))


def ray(i: int, j: int) -> np.ndarray:
    """Pixel (row i, column j)'s ray in camera coordinates (x right, y down, z = 1)."""
    return np.array([(j + 0.5 - SIZE / 2) / F, (i + 0.5 - SIZE / 2) / F, 1.0])


def at(r, i: int, j: int) -> tuple[int, float, np.ndarray]:
    return int(r.segmentation[0, i, j]), float(r.depth[0, i, j]), r.normals[0, :, i, j].astype(np.float64)


def test_camera_rays_have_unit_depth_and_the_stated_focal_length():
    d = camera_rays(SIZE, HFOV)
    assert np.all(d[:, 2] == 1.0)
    assert np.allclose(d[0], ray(0, 0)) and np.allclose(d[SIZE * 5 + 7], ray(5, 7))
    assert d[:, 0].max() == pytest.approx((SIZE / 2 - 0.5) / F)  # half a pixel inside the 60° field of view


def test_a_sphere_before_the_wall_matches_the_analytic_hit():
    """Camera level at height 1.5; a unit sphere whose centre is 0.5 below the camera and 5 ahead: in camera
    coordinates (y down) its centre is c = (0, 0.5, 5). Depth is the camera z of the hit: t with |t d - c| = 1."""
    r = render(one_scene([(SPHERE, (0.0, 1.0, 5.0), (1.0, 1.0, 1.0), 0.0)]), BANK, SIZE, HFOV)
    c = np.array([0.0, 0.5, 5.0])
    for i, j in [(36, 32), (40, 25), (30, 38), (43, 33)]:
        d = ray(i, j)
        a, b, cc = d @ d, -2 * d @ c, c @ c - 1.0
        t = (-b - np.sqrt(b * b - 4 * a * cc)) / (2 * a)
        cls, depth, normal = at(r, i, j)
        assert cls == SPHERE
        assert depth == pytest.approx(t, rel=1e-6)
        assert normal == pytest.approx(t * d - c, abs=1e-6)  # (p - c) / radius, radius 1
    cls, depth, normal = at(r, 2, 2)  # the top-left corner sees the wall
    assert (cls, depth) == (WALL, pytest.approx(8.0)) and normal == pytest.approx([0, 0, -1])
    cls, depth, normal = at(r, 62, 3)  # the bottom-left corner sees the floor, 1.5 below the camera
    assert (cls, depth) == (FLOOR, pytest.approx(1.5 / ray(62, 3)[1], rel=1e-6))
    assert normal == pytest.approx([0, -1, 0])


def test_a_pitched_camera_sees_the_floor_and_wall_tilted():
    """Pitched down by p: a camera ray d = (x, y, 1) points along (x, -cos p y - sin p, cos p - sin p y) in the
    world, so the floor (1.5 below) is hit at t = 1.5 / (cos p y + sin p) and the wall (8 ahead) at
    t = 8 / (cos p - sin p y); their normals in camera coordinates are (0, -cos p, -sin p) and (0, sin p, -cos p)."""
    p = np.radians(20.0)
    r = render(one_scene(pitch=p), BANK, SIZE, HFOV)
    for i, j in [(50, 10), (63, 63), (40, 30)]:
        y = ray(i, j)[1]
        cls, depth, normal = at(r, i, j)
        assert cls == FLOOR and depth == pytest.approx(1.5 / (np.cos(p) * y + np.sin(p)), rel=1e-6)
        assert normal == pytest.approx([0, -np.cos(p), -np.sin(p)], abs=1e-6)
    cls, depth, normal = at(r, 0, 20)
    assert cls == WALL and depth == pytest.approx(8.0 / (np.cos(p) - np.sin(p) * ray(0, 20)[1]), rel=1e-6)
    assert normal == pytest.approx([0, np.sin(p), -np.cos(p)], abs=1e-6)


def test_a_box_face_and_a_cylinder_top_and_side():
    """An axis-aligned box's front face at z = 3.5 (depth 3.5, normal -z); a cylinder's top cap 0.5 below the camera
    (depth 0.5 / y) and its side, where the ray meets the circle x² + (z - 6)² = 0.6²."""
    box = (BOX, (-1.0, 0.5, 4.0), (0.5, 0.5, 0.5), 0.0)
    cyl = (CYLINDER, (1.5, 0.5, 6.0), (0.6, 0.5, 0.6), 0.0)  # top at y = 1.0: 0.5 below the camera
    r = render(one_scene([box, cyl]), BANK, SIZE, HFOV)
    i, j = 40, 20  # left of centre, below the horizon: the box's front face
    d = ray(i, j)
    assert -1.5 <= 3.5 * d[0] <= -0.5 and 0.5 <= 1.5 - 3.5 * d[1] <= 1.5  # the hit lies on the face
    assert at(r, i, j)[:2] == (BOX, pytest.approx(3.5)) and at(r, i, j)[2] == pytest.approx([0, 0, -1])
    for i, j in [(36, 45), (40, 45)]:  # the top cap, then the side below it
        d = ray(i, j)
        t_top = 0.5 / d[1]
        on_top = (t_top * d[0] - 1.5) ** 2 + (t_top - 6.0) ** 2 <= 0.36
        a, b, c = d[0] ** 2 + 1, -2 * (1.5 * d[0] + 6.0), 1.5 ** 2 + 36 - 0.36
        t_side = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
        cls, depth, normal = at(r, i, j)
        assert cls == CYLINDER
        if on_top:
            assert depth == pytest.approx(t_top, rel=1e-6) and normal == pytest.approx([0, -1, 0])
        else:
            assert depth == pytest.approx(t_side, rel=1e-6)
            assert normal == pytest.approx([(t_side * d[0] - 1.5) / 0.6, 0, (t_side - 6.0) / 0.6], abs=1e-6)
    assert {bool((0.5 / ray(i, j)[1] * ray(i, j)[0] - 1.5) ** 2 + (0.5 / ray(i, j)[1] - 6) ** 2 <= 0.36)
            for i, j in [(36, 45), (40, 45)]} == {True, False}  # both branches were checked


def test_a_picture_is_its_own_class_with_the_geometry_of_the_wall():
    """A picture on the wall (x in [-1, 1], y in [2, 3]) changes the class, never depth or normals; one object
    in front of it occludes it exactly."""
    plain = render(one_scene(), BANK, SIZE, HFOV)
    hung = render(one_scene(pictures=[(WALL, (-1.0, 1.0, 2.0, 3.0))]), BANK, SIZE, HFOV)
    inside = []
    for i in range(SIZE):
        for j in range(SIZE):
            d = ray(i, j)
            x, y = 8.0 * d[0], 1.5 - 8.0 * d[1]
            if hung.segmentation[0, i, j] == WALL or hung.segmentation[0, i, j] == PICTURE:
                inside.append((-1 <= x < 1 and 2 <= y < 3) == (hung.segmentation[0, i, j] == PICTURE))
    assert all(inside) and (hung.segmentation == PICTURE).sum() > 20
    assert np.array_equal(plain.depth, hung.depth) and np.array_equal(plain.normals, hung.normals)


def test_texture_and_lighting_change_the_image_and_nothing_else():
    """The same geometry with blank, full-ink or striped digits: different pixels, identical label maps. Lit head on
    (light towards the camera, ambient 0.2), a grey wall (albedo 0.5, no ink) shades to 0.5 x 255."""
    objs = [(SPHERE, (0.0, 0.8, 4.0), (0.8, 0.8, 0.8), 0.0), (BOX, (1.5, 0.4, 5.0), (0.4, 0.4, 0.4), 0.3)]
    blank = render(one_scene(objs, contrast=0.8, digit=0), BANK, SIZE, HFOV)
    inked = render(one_scene(objs, contrast=0.8, digit=2), BANK, SIZE, HFOV)
    assert (blank.image != inked.image).mean() > 0.2
    for a, b in [(blank.segmentation, inked.segmentation), (blank.depth, inked.depth), (blank.normals, inked.normals)]:
        assert np.array_equal(a, b)
    assert np.all(blank.image[0, :, 0, 0] == 128)  # rint(0.5 * (0.2 + 0.8 * 1) * 255) = rint(127.5)


SPLIT = SplitConfig(seed=3, validation=0.1, test=0.2)


def test_splits_are_fixed_by_the_seed_and_sized_by_the_split_block():
    a = scene_splits(n=40, seed=0, size=32, max_objects=3, pictures=2, split_cfg=SPLIT)
    b = scene_splits(n=40, seed=0, size=32, max_objects=3, pictures=2, split_cfg=SPLIT)
    c = scene_splits(n=40, seed=1, size=32, max_objects=3, pictures=2, split_cfg=SPLIT)
    assert {k: len(v) for k, v in a.items()} == {"train": 28, "validation": 4, "test": 8}
    for name in a:
        assert np.array_equal(a[name].inputs, b[name].inputs)
        for col in ("segmentation", "depth", "normals"):
            assert np.array_equal(a[name].targets[col], b[name].targets[col])
        assert not np.array_equal(a[name].targets["depth"], c[name].targets["depth"])
    s = a["train"]
    assert s.inputs.dtype == np.uint8 and s.inputs.shape == (28, 3, 32, 32)
    assert s.targets["segmentation"].dtype == np.int64 and set(np.unique(s.targets["segmentation"])) <= set(range(6))
    assert s.targets["depth"].dtype == np.float32 and s.targets["depth"].min() > 0
    assert np.allclose(np.linalg.norm(s.targets["normals"], axis=1), 1.0, atol=1e-5)


def _fingerprint(**options) -> str:
    spec = DataSpec(source="scenes", options={"n": 20, "image_size": 16, **options})
    tasks = [TaskConfig(name="depth", input="image", target="regression")]
    return fingerprint_split(scenes(spec, tasks, SPLIT)["train"], "depth")


def test_the_fingerprint_covers_every_generator_option_and_the_seed():
    base = _fingerprint()
    assert _fingerprint() == base
    for change in ({"seed": 1}, {"n": 21}, {"image_size": 17}, {"max_objects": 2}, {"pictures": 0}):
        assert _fingerprint(**change) != base, change


@pytest.mark.parametrize("options, label, message", [
    ({"pictures": 3}, "depth", "pictures=3 must be 0, 1"),
    ({"n": 0}, "depth", "n=0 must be a whole number >= 10"),
    ({"max_object": 2}, "depth", "unknown option 'max_object'.*max_objects"),
    ({}, "deep", "no label column 'deep'"),
])
def test_bad_options_are_named(options, label, message):
    tasks = [TaskConfig(name="t", label=label, input="image", target="regression")]
    with pytest.raises(BenchError, match=message):
        scenes(DataSpec(source="scenes", options=options), tasks, SPLIT)


def _small_suite(tmp_path: Path, **options) -> SuiteConfig:
    raw = read_suite_yaml(find_suite("scenes"))
    raw["data"]["options"].update({"n": 40, "image_size": 32, **options})
    return validate_suite(raw, "test")


@pytest.mark.integration
def test_the_suite_loads_through_the_dense_kinds_and_its_fingerprint_covers_the_options(tmp_path):
    """The suite file's three tasks read the source's columns; the kinds accept them (load_suite_data checks every
    split's targets); the suite's data fingerprint changes with a generator option."""
    data = load_suite_data(_small_suite(tmp_path))
    assert data.task_names == ["segmentation", "depth", "normals"]
    assert {k: len(v) for k, v in data.splits["depth"].items()} == {"train": 28, "validation": 4, "test": 8}
    assert load_suite_data(_small_suite(tmp_path)).fingerprint == data.fingerprint
    assert load_suite_data(_small_suite(tmp_path, pictures=0)).fingerprint != data.fingerprint
