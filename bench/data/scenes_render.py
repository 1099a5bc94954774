"""A small exact ray caster for the ``scenes`` suite: spheres, boxes and cylinders on a floor before a wall.

Every pixel is one ray through its centre from a pinhole camera; the nearest surface it hits gives the pixel's
class, depth and normal EXACTLY (no anti-aliasing, no approximation), and its colour by Lambertian shading of a
textured albedo. All scenes of a batch are cast at once with numpy (arrays of shape (scenes, pixels)).

Coordinates. The world is Y-up: the floor is the plane y = 0, the back wall the plane z = ``wall``. The camera sits
at (0, ``height``, 0), pitched down by ``pitch`` and turned by ``yaw`` (radians). Camera coordinates are OpenCV's:
x right, y down, z forward. A pixel (row i, column j) looks along d = ((j + 0.5 - W/2) / f, (i + 0.5 - H/2) / f, 1)
in camera coordinates, f = (W/2) / tan(hfov/2). Because d's z component is 1, the ray parameter t of a hit IS the
hit's camera z: ``depth`` is camera z (as NYUv2's depth), not the distance along the ray. ``normals`` are unit
vectors in camera coordinates, facing the camera (a wall seen head-on is (0, 0, -1); the floor seen level is
(0, -1, 0)).

Surfaces: every ray hits the wall or the floor (the camera looks forward), so no pixel is invalid. Objects rest on
the floor: a sphere (centre, radius), a box turned about the vertical axis (centre, half sizes, angle) and a
vertical cylinder (centre, radius, half height; its top cap is a disc). Pictures are rectangles painted on the wall
or the floor: geometrically the wall or floor, but their own class (NYUv2's "picture" and "floor mat").

Textures are real digits (28x28 uint8, ink 0..255): an albedo is ``base * (1 - c * ink) + paint * c * ink`` with a
surface's base and paint colours and contrast c. Shading: ``albedo * (ambient + (1 - ambient) * max(0, n·light))``;
no shadows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR, WALL, SPHERE, BOX, CYLINDER, PICTURE = range(6)
CLASSES = ("floor", "wall", "sphere", "box", "cylinder", "picture")
SHAPES = (SPHERE, BOX, CYLINDER)  # an object's kind is its class id
TILE = 1.0  # metres per digit tile on the wall and the floor
TILE_DIGITS = 4  # digits per scene that tile the wall and the floor


@dataclass(frozen=True)
class Scenes:
    """Parameters of B scenes with up to M objects and P pictures (all float arrays float64).

    Camera: ``height``, ``pitch``, ``yaw``, ``wall`` (B,). Light: ``light`` (B, 3) a unit world vector towards the
    light, ``ambient`` (B,). Objects: ``kind`` (B, M) int, a class id of ``SHAPES`` or -1 for an empty slot;
    ``center`` (B, M, 3) (y is the half height: objects rest on the floor), ``size`` (B, M, 3) (sphere: radius;
    box: half sizes x, y, z; cylinder: radius, half height), ``angle`` (B, M) a box's turn about the vertical.
    Pictures: ``pic_on`` (B, P) int, FLOOR or WALL or -1 for none; ``pic_rect`` (B, P, 4): (a0, a1, b0, b1) the
    rectangle in the plane's coordinates (wall: x and y; floor: x and z). Appearance of every surface s (0 floor,
    1 wall, 2 + m object m, 2 + M + p picture p): ``digit`` (B, S) an index into the digit bank (the floor and wall
    tile ``tiles`` (B, TILE_DIGITS) instead), ``base`` and ``paint`` (B, S, 3) colours in [0, 1], ``contrast`` (B, S).
    """

    height: np.ndarray
    pitch: np.ndarray
    yaw: np.ndarray
    wall: np.ndarray
    light: np.ndarray
    ambient: np.ndarray
    kind: np.ndarray
    center: np.ndarray
    size: np.ndarray
    angle: np.ndarray
    pic_on: np.ndarray
    pic_rect: np.ndarray
    digit: np.ndarray
    tiles: np.ndarray
    base: np.ndarray
    paint: np.ndarray
    contrast: np.ndarray


@dataclass(frozen=True)
class Rendered:
    """``image`` (B, 3, H, W) uint8; ``segmentation`` (B, H, W) int64 class ids; ``depth`` (B, H, W) float32 camera
    z; ``normals`` (B, 3, H, W) float32 unit vectors in camera coordinates."""

    image: np.ndarray
    segmentation: np.ndarray
    depth: np.ndarray
    normals: np.ndarray


def camera_rays(size: int, hfov: float) -> np.ndarray:
    """(P, 3) ray directions in camera coordinates with z = 1, row-major over pixel centres."""
    f = (size / 2) / np.tan(hfov / 2)
    c = (np.arange(size) + 0.5 - size / 2) / f
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel(), np.ones(size * size)], axis=1)


def camera_to_world(pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(B, 3, 3) orthogonal maps from camera to world coordinates (y down -> y up, then pitch down, then yaw)."""
    cp, sp, cy, sy = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    one, zero = np.ones_like(pitch), np.zeros_like(pitch)
    flip = np.diag([1.0, -1.0, 1.0])
    # pitch about x: forward (0, 0, 1) -> (0, -sin, cos), the camera looks down; yaw about y: forward turns to +x
    pitch_m = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1),
                        np.stack([zero, sp, cp], -1)], -2)
    yaw_m = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                      np.stack([-sy, zero, cy], -1)], -2)
    return yaw_m @ pitch_m @ flip


class _Buffers:
    """The nearest hit so far per ray: its t, world normal, class, surface index and texture coordinates."""

    def __init__(self, t: np.ndarray, normal: np.ndarray, cls: np.ndarray, surface: np.ndarray, uv: np.ndarray):
        self.t, self.normal, self.cls, self.surface, self.uv = t, normal, cls, surface, uv

    def write(self, at: tuple[np.ndarray, np.ndarray], t: np.ndarray, normal: np.ndarray, cls: int, surface: int,
              uv: np.ndarray) -> None:
        """Keep the new hits (flat arrays for the pixels ``at`` = (scene, pixel)) where they are nearer."""
        near = t < self.t[at]
        at = (at[0][near], at[1][near])
        self.t[at], self.normal[at], self.uv[at] = t[near], normal[near], uv[near]
        self.cls[at], self.surface[at] = cls, surface


def _positive(t: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(t) & (t > 1e-9), t, np.inf)


# The shapes: flat arrays, one row per (scene, pixel) candidate: oc = camera origin - object centre (K, 3), the
# ray d (K, 3), the object's size (K, 3). Each returns t (K,) (inf: no hit), world normals (K, 3), texture uv (K, 2).


def _sphere(oc: np.ndarray, d: np.ndarray, s: np.ndarray):
    r = s[:, 0]
    a = (d * d).sum(-1)
    b = 2 * (d * oc).sum(-1)
    disc = b * b - 4 * a * ((oc * oc).sum(-1) - r * r)
    with np.errstate(invalid="ignore"):
        t = _positive((-b - np.sqrt(disc)) / (2 * a))
    n = (oc + np.where(np.isfinite(t), t, 0.0)[..., None] * d) / r[..., None]
    u = (np.arctan2(n[..., 0], -n[..., 2]) / np.pi + 1.0) % 1.0  # one digit on each half of the sphere
    v = np.clip((1.0 - n[..., 1]) / 2.0, 0.0, 1.0)
    return t, n, np.stack([u * 2 % 1.0, v], -1)


def _box(oc: np.ndarray, d: np.ndarray, s: np.ndarray, angle: np.ndarray):
    ca, sa = np.cos(angle), np.sin(angle)  # local x = (ca, 0, -sa), local z = (sa, 0, ca)

    def local(v):
        return np.stack([ca * v[..., 0] - sa * v[..., 2], v[..., 1], sa * v[..., 0] + ca * v[..., 2]], -1)

    ol, dl, h = local(oc), local(d), s
    with np.errstate(divide="ignore", invalid="ignore"):  # the slab method; a ray parallel to a slab gives +-inf
        t1, t2 = (-h - ol) / dl, (h - ol) / dl
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near, far = np.nan_to_num(near, nan=-np.inf), np.nan_to_num(far, nan=np.inf)
    axis = near.argmax(-1)
    t_in, t_out = near.max(-1), far.min(-1)
    t = _positive(np.where(t_in <= t_out, t_in, np.inf))
    sign = -np.sign(np.take_along_axis(dl, axis[..., None], -1)[..., 0])
    nl = np.zeros_like(dl)
    np.put_along_axis(nl, axis[..., None], sign[..., None], -1)
    n = np.stack([ca * nl[..., 0] + sa * nl[..., 2], nl[..., 1], -sa * nl[..., 0] + ca * nl[..., 2]], -1)
    pl = ol + np.where(np.isfinite(t), t, 0.0)[..., None] * dl
    q = np.clip((pl / h + 1.0) / 2.0, 0.0, 1.0)  # each local coordinate mapped to [0, 1] on the box
    uv_by_axis = np.stack([q[..., [2, 1]], q[..., [0, 2]], q[..., [0, 1]]], -2)  # face normal x, y, z
    uv = np.take_along_axis(uv_by_axis, axis[..., None, None].repeat(2, -1), -2)[..., 0, :]
    return t, n, uv


def _cylinder(oc: np.ndarray, d: np.ndarray, s: np.ndarray):
    r, hh = s[:, 0], s[:, 1]
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = 2 * (d[..., 0] * oc[..., 0] + d[..., 2] * oc[..., 2])
    disc = b * b - 4 * a * (oc[..., 0] ** 2 + oc[..., 2] ** 2 - r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = _positive((-b - np.sqrt(disc)) / (2 * a))
        ys = oc[..., 1] + ts * d[..., 1]
        ts = np.where(np.abs(ys) <= hh, ts, np.inf)
        tc = _positive((hh - oc[..., 1]) / d[..., 1])  # the top cap
    pc = oc + np.where(np.isfinite(tc), tc, 0.0)[..., None] * d
    tc = np.where(pc[..., 0] ** 2 + pc[..., 2] ** 2 <= r * r, tc, np.inf)
    side = ts <= tc
    t = np.minimum(ts, tc)
    p = oc + np.where(np.isfinite(t), t, 0.0)[..., None] * d
    n_side = np.stack([p[..., 0] / r, np.zeros_like(t), p[..., 2] / r], -1)
    n_top = np.broadcast_to(np.array([0.0, 1.0, 0.0]), n_side.shape)
    n = np.where(side[..., None], n_side, n_top)
    u_side = (np.arctan2(p[..., 0], -p[..., 2]) / np.pi + 1.0) % 1.0
    v_side = np.clip((hh - p[..., 1]) / (2 * hh), 0.0, 1.0)
    uv_top = np.clip(np.stack([p[..., 0], p[..., 2]], -1) / (2 * r[..., None]) + 0.5, 0.0, 1.0)
    uv = np.where(side[..., None], np.stack([u_side * 2 % 1.0, v_side], -1), uv_top)
    return t, n, uv


def _bound(shape: int, size: np.ndarray) -> np.ndarray:
    """(n,) radius of a sphere about the object's centre that holds it."""
    if shape == SPHERE:
        return size[:, 0]
    if shape == BOX:
        return np.linalg.norm(size, axis=1)
    return np.hypot(size[:, 0], size[:, 1])


def _candidates(o: np.ndarray, d: np.ndarray, dd: np.ndarray, center: np.ndarray,
                bound: np.ndarray) -> tuple[np.ndarray, ...]:
    """(scene row, pixel) of the rays that pass within ``bound`` of ``center`` ahead of the camera: the only rays
    an object can hit, so the exact test runs on a few per cent of the pixels. |d x c|^2 = |d|^2 |c|^2 - (d.c)^2,
    with ``dd`` = |d|^2 per pixel (the same in every scene: a rotation keeps lengths)."""
    c = center - o
    dc = (d @ c[:, :, None])[..., 0]
    return np.nonzero((dc > 0) & (dd * ((c * c).sum(-1) - bound * bound)[:, None] <= dc * dc))


def _planes(o: np.ndarray, d: np.ndarray, sc: Scenes) -> _Buffers:
    """The floor or the wall behind every ray, and the pictures painted on them (where the hit lies in their
    rectangle): the buffers objects are then drawn into."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = _positive(-o[:, None, 1] / d[..., 1])
        t_wall = _positive((sc.wall[:, None] - o[:, None, 2]) / d[..., 2])
    floor = t_floor < t_wall
    t = np.where(floor, t_floor, t_wall)
    p = o[:, None, :] + t[..., None] * d
    a, b = p[..., 0], np.where(floor, p[..., 2], p[..., 1])  # plane coordinates: floor (x, z), wall (x, y)
    plane = np.where(floor, FLOOR, WALL)
    cls, surface = plane.copy(), plane.copy()
    uv = np.stack([a / TILE, np.where(floor, b, -b) / TILE], -1)  # tiled: the digit picks by tile
    for k in range(sc.pic_on.shape[1]):
        a0, a1, b0, b1 = (sc.pic_rect[:, k, i][:, None] for i in range(4))
        inside = (sc.pic_on[:, k, None] == plane) & (a >= a0) & (a < a1) & (b >= b0) & (b < b1)
        cls = np.where(inside, PICTURE, cls)
        surface = np.where(inside, 2 + sc.kind.shape[1] + k, surface)
        with np.errstate(divide="ignore", invalid="ignore"):  # an absent picture's rectangle may be empty
            local = np.stack([(a - a0) / (a1 - a0), np.where(floor, b - b0, b1 - b) / (b1 - b0)], -1)
        uv = np.where(inside[..., None], local, uv)
    normal = np.where(floor[..., None], np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0]))
    return _Buffers(t, normal, cls, surface, uv)


def _ink(sc: Scenes, buf: _Buffers, bank: np.ndarray) -> np.ndarray:
    """(B, P) digit ink in [0, 1] at each hit: tiles on the bare floor and wall, one stretched digit elsewhere."""
    rows = np.arange(len(buf.t))[:, None]
    u, v = buf.uv[..., 0], buf.uv[..., 1]
    tiled = buf.surface < 2
    tile = (np.floor(u).astype(np.int64) * 3 + np.floor(v).astype(np.int64) * 5) % TILE_DIGITS
    digit = np.where(tiled, sc.tiles[rows, tile], sc.digit[rows, buf.surface])
    side = bank.shape[-1]
    col = np.clip((np.mod(u, 1.0) * side).astype(np.int64), 0, side - 1)
    row = np.clip((np.mod(v, 1.0) * side).astype(np.int64), 0, side - 1)
    return bank[digit, row, col].astype(np.float64) / 255.0


def render(sc: Scenes, bank: np.ndarray, size: int = 64, hfov: float = np.pi / 3) -> Rendered:
    """Cast every pixel of every scene; ``bank`` (D, h, w) uint8 digit textures indexed by ``sc.digit``."""
    b = len(sc.height)
    rot = camera_to_world(sc.pitch, sc.yaw)
    rays = camera_rays(size, hfov)
    d = rays @ rot.transpose(0, 2, 1)  # (B, P, 3): each camera ray in world coordinates
    dd = (rays * rays).sum(-1)
    o = np.stack([np.zeros(b), sc.height, np.zeros(b)], -1)
    buf = _planes(o, d, sc)
    for m in range(sc.kind.shape[1]):
        for shape in SHAPES:
            rows = np.flatnonzero(sc.kind[:, m] == shape)
            if not len(rows):
                continue
            r, p = _candidates(o[rows], d[rows], dd, sc.center[rows, m], _bound(shape, sc.size[rows, m]))
            at = (rows[r], p)
            oc, ray, s = o[at[0]] - sc.center[at[0], m], d[at], sc.size[at[0], m]
            if shape == SPHERE:
                t, n, uv = _sphere(oc, ray, s)
            elif shape == BOX:
                t, n, uv = _box(oc, ray, s, sc.angle[at[0], m])
            else:
                t, n, uv = _cylinder(oc, ray, s)
            buf.write(at, t, n, shape, 2 + m, uv)
    ink = _ink(sc, buf, bank)[..., None]
    rows = np.arange(b)[:, None]
    c = sc.contrast[rows, buf.surface][..., None]
    albedo = sc.base[rows, buf.surface] * (1 - c * ink) + sc.paint[rows, buf.surface] * c * ink
    lambert = np.maximum(buf.normal @ sc.light[:, :, None], 0.0)  # (B, P, 1): n . light
    shade = sc.ambient[:, None, None] + (1 - sc.ambient[:, None, None]) * lambert
    rgb = np.clip(np.rint(albedo * shade * 255.0), 0, 255).astype(np.uint8)
    normals_cam = buf.normal @ rot  # world -> camera: rot's transpose, since rot is orthogonal
    grid = (b, size, size)
    return Rendered(image=rgb.transpose(0, 2, 1).reshape(b, 3, size, size),
                    segmentation=buf.cls.reshape(grid),
                    depth=buf.t.reshape(grid).astype(np.float32),
                    normals=normals_cam.transpose(0, 2, 1).reshape(b, 3, size, size).astype(np.float32))
