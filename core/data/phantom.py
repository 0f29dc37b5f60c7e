"""A synthetic abdominal MRI phantom: axial slices through a 3-D patient with stomach and bowel.

Hand-written because no library makes GI-tract MRI phantoms. A patient is a set of smooth 3-D shapes
(blobs whose centre and radius vary smoothly with height z, tubes along smooth curves) in millimetres;
a slice cuts them at one z, so neighbouring slices change smoothly, and each organ's mask is exactly
where that organ is drawn. Coordinates: x to the image's right (the patient's left), y to the image's
bottom (posterior), z from the top of the scan (head) down. Pixels are 1.5 mm, as in the real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from core.organs import ORGANS

SPACING_MM = 1.5
# Head-to-foot extent of every scan. The organs lie well inside it, so the first and last slices
# show liver or pelvis without any of the three organs, as real scans do.
SCAN_LENGTH_MM = 300.0

_LARGE, _SMALL, _STOMACH = (ORGANS.index(name) + 1 for name in ("large_bowel", "small_bowel", "stomach"))

# Signal of each tissue before a scan's own contrast, bias, gain and noise (T1-like: fat bright).
TISSUE = {
    "subcutaneous_fat": 0.86,
    "muscle": 0.30,
    "visceral_fat": 0.60,
    "liver": 0.36,
    "liver_vessel": 0.16,
    "spleen": 0.42,
    "kidney_cortex": 0.55,
    "kidney_medulla": 0.32,
    "bone_marrow": 0.38,
    "cortical_bone": 0.78,
    "disc": 0.30,
    "csf": 0.12,
    "aorta": 0.85,
    "aorta_lumen": 0.55,
    "vena_cava": 0.58,
    "stomach_wall": 0.70,
    "stomach_content": 0.26,
    "stomach_food": 0.48,
    "gas": 0.03,
    "colon_wall": 0.24,
    "colon_content_dark": 0.18,
    "colon_content_bright": 0.52,
    "small_bowel_wall": 0.88,
    "small_bowel_lumen": 0.34,
}


def _catmull_rom(points: np.ndarray, step_mm: float) -> np.ndarray:
    """A smooth curve through ``points`` (K, D >= 3), resampled every ``step_mm`` along its xyz length.

    Columns past the third (e.g. a radius) are carried along and interpolated the same way.
    """
    p = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    t = np.linspace(0.0, 1.0, 24, endpoint=False)[:, None]
    pieces = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        pieces.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    pieces.append(points[-1:])
    dense = np.concatenate(pieces)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense[:, :3], axis=0), axis=1))])
    s = np.append(np.arange(0.0, arc[-1], step_mm), arc[-1])
    return np.stack([np.interp(s, arc, dense[:, k]) for k in range(dense.shape[1])], axis=1)


class _NoiseVolume:
    """Smooth random texture fixed to the patient: a coarse 3-D grid, sampled with (tri)linear weights."""

    _LO = np.array([-290.0, -290.0, -40.0])  # x, y, z in mm: the largest image plus a day's shift
    _HI = np.array([290.0, 290.0, SCAN_LENGTH_MM + 40.0])

    def __init__(self, rng: np.random.Generator, spacing_mm: float):
        self.spacing = spacing_mm
        nx, ny, nz = (np.ceil((self._HI - self._LO) / spacing_mm).astype(int) + 1).tolist()
        grid = rng.standard_normal((nz, ny, nx), dtype=np.float32)
        for axis in range(3):  # a [1, 2, 1] pass per axis takes the blockiness out of linear sampling
            a = np.moveaxis(grid, axis, 0)
            a[1:-1] = 0.5 * a[1:-1] + 0.25 * (a[:-2] + a[2:])
        self.grid = grid / grid.std()

    def _weights(self, coords: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.grid.shape[2 - axis]
        f = np.clip((coords - self._LO[axis]) / self.spacing, 0.0, n - 1.001)
        i = f.astype(np.int64)
        return i, (f - i).astype(np.float32)

    def sample(self, z: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The texture on the plane at height ``z`` over columns ``x`` (W,) and rows ``y`` (H,): (H, W)."""
        iz, wz = self._weights(np.array([z]), 2)
        plane = (1 - wz[0]) * self.grid[iz[0]] + wz[0] * self.grid[iz[0] + 1]
        ix, wx = self._weights(x, 0)
        iy, wy = self._weights(y, 1)
        rows = plane[iy[0] : iy[-1] + 2]  # only the grid rows the image touches
        along_x = rows[:, ix] * (1 - wx) + rows[:, ix + 1] * wx
        iy = iy - iy[0]
        return along_x[iy] * (1 - wy)[:, None] + along_x[iy + 1] * wy[:, None]


@dataclass(frozen=True)
class Blob:
    """A smooth closed 3-D shape: an ellipse per slice whose centre, size and lobes vary with z."""

    z_top: float
    z_bottom: float
    top: tuple[float, float]  # centre (x, y) at z_top
    bottom: tuple[float, float]  # centre at z_bottom
    axes: tuple[float, float]  # largest semi-axes (x, y)
    lobes: np.ndarray  # (K, 4): harmonic k, amplitude, phase at top, phase at bottom

    def section(self, z: float):
        """(cx, cy, ax, ay, lobes (K, 3): k, amplitude, phase) of the cut at ``z``, or None outside."""
        u = (z - self.z_top) / (self.z_bottom - self.z_top)
        if not 0.0 < u < 1.0:
            return None
        size = np.sqrt(4 * u * (1 - u))
        if size < 0.08:
            return None
        cx = self.top[0] + (self.bottom[0] - self.top[0]) * u
        cy = self.top[1] + (self.bottom[1] - self.top[1]) * u
        lobes = np.stack(
            [self.lobes[:, 0], self.lobes[:, 1], self.lobes[:, 2] + (self.lobes[:, 3] - self.lobes[:, 2]) * u], axis=1
        )
        return cx, cy, self.axes[0] * size, self.axes[1] * size, lobes

    def shifted(self, dx: float, dy: float, dz: float, scale: float = 1.0) -> Blob:
        return Blob(
            self.z_top + dz,
            self.z_bottom + dz,
            (self.top[0] + dx, self.top[1] + dy),
            (self.bottom[0] + dx, self.bottom[1] + dy),
            (self.axes[0] * scale, self.axes[1] * scale),
            self.lobes,
        )


@dataclass(frozen=True)
class Tube:
    """Tubes along smooth 3-D curves: ``path`` (N, 4) holds x, y, z and the radius, a few mm apart.

    Drawn as the union of spheres centred on the path, so several curves can share one ``Tube``.
    """

    path: np.ndarray
    wall_mm: float

    @staticmethod
    def through(curves: list[np.ndarray], wall_mm: float) -> Tube:
        """Tubes through the control points of each curve (K, 4): x, y, z, radius."""
        paths = [_catmull_rom(np.asarray(points, dtype=np.float64), step_mm=3.0) for points in curves]
        return Tube(np.concatenate(paths).astype(np.float32), wall_mm)


def _lobes(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    ks = np.array([2.0, 3.0, 4.0])
    amps = amplitude * rng.uniform(0.3, 1.0, 3) / ks
    phase = rng.uniform(0, 2 * np.pi, 3)
    return np.stack([ks, amps, phase, phase + rng.uniform(-1.5, 1.5, 3)], axis=1)


@dataclass(frozen=True)
class Anatomy:
    """One patient on one day: every structure in millimetres, ready to be cut into slices."""

    body_axes: tuple[float, float]  # outer semi-axes of the abdomen (x, y)
    fat_mm: float  # subcutaneous fat thickness
    muscle_mm: float
    arms: bool
    liver: Blob
    spleen: Blob
    stomach: Blob
    stomach_gas: float  # fraction of the stomach's height filled with gas at the front (0 = none)
    kidneys: tuple[Blob, Blob]
    spine_y: float
    liver_vessels: np.ndarray  # (V, 4): x, y, radius, drift per mm of z
    colon: Tube
    small_bowel: Tube
    tissue: dict[str, float]
    texture: _NoiseVolume
    mottle: _NoiseVolume


@dataclass(frozen=True)
class Patient:
    """The fixed anatomy of one synthetic patient; ``on_day`` gives it slightly moved and deformed."""

    seed: np.random.SeedSequence

    @cached_property
    def _base(self) -> dict:
        rng = np.random.default_rng(self.seed)
        j = lambda s: rng.normal(0.0, s)  # noqa: E731 (a jitter of s mm, drawn in a fixed order)
        body = (rng.uniform(135, 165), rng.uniform(98, 118))
        fat, muscle = rng.uniform(10, 24), rng.uniform(6, 10)
        # The liver's dome is above the scan, so it is large in the first slices and ends mid-way.
        liver = Blob(
            -90 + j(10),
            170 + j(12),
            (-40 + j(6), -5 + j(5)),
            (-70 + j(5), 15 + j(5)),
            (85 + j(6), 72 + j(5)),
            _lobes(rng, 0.25),
        )
        spleen = Blob(
            10 + j(8),
            125 + j(8),
            (80 + j(5), 45 + j(5)),
            (78 + j(5), 35 + j(5)),
            (30 + j(3), 42 + j(4)),
            _lobes(rng, 0.15),
        )
        stomach = Blob(
            30 + j(6),
            160 + j(10),
            (45 + j(6), 5 + j(6)),
            (30 + j(8), -35 + j(6)),
            (52 + j(6), 40 + j(5)),
            _lobes(rng, 0.3),
        )
        kidneys = tuple(
            Blob(
                95 + j(8),
                205 + j(8),
                (side * 65 + j(3), 45 + j(3)),
                (side * 68 + j(3), 52 + j(3)),
                (24 + j(2), 33 + j(2)),
                _lobes(rng, 0.08),
            )
            for side in (-1, 1)
        )
        vessels = np.stack(
            [rng.uniform(-95, -10, 9), rng.uniform(-50, 35, 9), rng.uniform(2.5, 5.0, 9), rng.uniform(-0.25, 0.25, 9)],
            axis=1,
        )
        # Large bowel: caecum and ascending colon on the image's left, the transverse colon sagging
        # across the front, descending colon on the right, sigmoid to the middle. Columns: x, y, z, radius.
        colon = np.array(
            [
                [-68, 12, 238, 21],
                [-78, 14, 190, 20],
                [-76, 4, 140, 19],
                [-58, -38, 118, 17],
                [-20, -66, 142, 16],
                [22, -64, 146, 16],
                [70, -26, 108, 16],
                [86, 12, 138, 15],
                [84, 18, 196, 15],
                [70, 8, 240, 14],
                [34, -12, 258, 14],
                [4, 4, 266, 14],
            ],
            dtype=np.float64,
        )
        colon[:, :3] += rng.normal(0.0, [5, 5, 6], (len(colon), 3))
        colon[:, 3] *= rng.uniform(0.9, 1.1)
        # Small bowel: loops meandering through the central, lower abdomen.
        loops = []
        for _ in range(int(rng.integers(10, 14))):
            point = rng.uniform([-50, -50, 158], [50, 15, 245])
            points = [point]
            for _ in range(int(rng.integers(5, 8))):
                step = rng.normal(0.0, [26, 22, 12])
                point = np.clip(point + step, [-60, -58, 150], [60, 25, 254])
                points.append(point)
            radius = rng.uniform(9.0, 12.0)
            loops.append(np.column_stack([np.array(points), np.full(len(points), radius)]))
        return dict(
            body=body,
            fat=fat,
            muscle=muscle,
            arms=bool(rng.random() < 0.6),
            liver=liver,
            spleen=spleen,
            stomach=stomach,
            gas=float(rng.uniform(0.0, 0.3)) * (rng.random() < 0.6),
            kidneys=kidneys,
            spine_y=body[1] * 0.45 + j(3),
            vessels=vessels,
            colon=colon,
            loops=loops,
            texture=_NoiseVolume(rng, 9.0),
            mottle=_NoiseVolume(rng, 5.0),
        )

    def on_day(self, day_seed: np.random.SeedSequence) -> Anatomy:
        """The patient on one scan day: shifted a few mm, organs filled and loops moved a little."""
        base = self._base
        rng = np.random.default_rng(day_seed)
        dx, dy, dz = rng.normal(0.0, [4.0, 3.0, 5.0])
        fill = rng.uniform(0.85, 1.15)  # how full the stomach is today
        colon = base["colon"].copy()
        colon[:, :3] += rng.normal(0.0, 2.0, (len(colon), 3)) + [dx, dy, dz]
        loops = []
        for points in base["loops"]:
            points = points.copy()
            points[:, :3] += rng.normal(0.0, 4.0, (len(points), 3)) + [dx, dy, dz]
            loops.append(points)
        # Each scan's own contrast: a gamma over the whole tissue table plus a small jitter per tissue.
        gamma = rng.uniform(0.8, 1.25)
        tissue = {name: float((value * np.exp(rng.normal(0.0, 0.05))) ** gamma) for name, value in TISSUE.items()}
        return Anatomy(
            body_axes=base["body"],
            fat_mm=base["fat"],
            muscle_mm=base["muscle"],
            arms=base["arms"],
            liver=base["liver"].shifted(dx, dy, dz),
            spleen=base["spleen"].shifted(dx, dy, dz),
            stomach=base["stomach"].shifted(dx, dy, dz, fill),
            stomach_gas=base["gas"],
            kidneys=tuple(k.shifted(dx, dy, dz) for k in base["kidneys"]),
            spine_y=base["spine_y"] + dy,
            liver_vessels=base["vessels"] + [dx, dy, 0, 0],
            colon=Tube.through([colon], wall_mm=3.0),
            small_bowel=Tube.through(loops, wall_mm=3.0),
            tissue=tissue,
            texture=base["texture"],
            mottle=base["mottle"],
        )


class _Canvas:
    """One slice being painted back to front; ``owner`` says which organ (0 = none) each pixel shows."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.image = np.zeros((len(y), len(x)), dtype=np.float32)
        self.owner = np.zeros((len(y), len(x)), dtype=np.int8)

    def window(self, x0: float, x1: float, y0: float, y1: float):
        """Row and column slices of the pixels whose centres lie in [x0, x1] x [y0, y1], or None."""
        c0, c1 = np.searchsorted(self.x, [x0, x1])
        r0, r1 = np.searchsorted(self.y, [y0, y1])
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def paint(self, win, where: np.ndarray, value, organ: int = 0) -> None:
        rows, cols = win
        target = self.image[rows, cols]
        target[where] = value[where] if isinstance(value, np.ndarray) else value
        self.owner[rows, cols][where] = organ


def _inside_body_shape(x, y, ax, ay, back_power=3.2):
    """Pixels inside a body-shaped outline: round at the front, flatter at the back (y > 0)."""
    power = np.where(y > 0, back_power, 2.0)
    # Each row's half-width from |x / ax|^p + |y / ay|^p = 1, then one comparison per pixel.
    half_width = ax * np.clip(1.0 - np.abs(y / ay) ** power, 0.0, None) ** (1.0 / power)
    return np.abs(x)[None, :] < half_width[:, None]


def _ellipse(canvas: _Canvas, cx: float, cy: float, ax: float, ay: float):
    """(window, normalised radius) of an axis-aligned ellipse; radius < 1 inside. Window None if off-image."""
    win = canvas.window(cx - ax, cx + ax, cy - ay, cy + ay)
    if win is None:
        return None, None
    return win, np.hypot((canvas.x[win[1]][None, :] - cx) / ax, (canvas.y[win[0]][:, None] - cy) / ay)


def _blob_q(canvas: _Canvas, blob: Blob, z: float, win) -> np.ndarray:
    """A blob's normalised radius over the pixels of ``win`` (q < 1 inside)."""
    cx, cy, ax, ay, lobes = blob.section(z)
    dx = (canvas.x[win[1]][None, :] - cx) / ax
    dy = (canvas.y[win[0]][:, None] - cy) / ay
    r = np.hypot(dx, dy)
    # cos(k theta), sin(k theta) by the multiple-angle recurrences: no arctan2 or cos per pixel.
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = np.where(r > 0, dx / r, 1.0)
        s1 = np.where(r > 0, dy / r, 0.0)
    c, sn = c1, s1
    outline = np.ones_like(r)
    harmonic = 1
    for k, a, ph in lobes:
        while harmonic < k:
            c, sn = c * c1 - sn * s1, sn * c1 + c * s1
            harmonic += 1
        outline += a * (c * np.cos(ph) - sn * np.sin(ph))
    return r / outline


def _blob_radius(canvas: _Canvas, blob: Blob, z: float, margin: float = 1.0):
    """(window, normalised radius q, smaller semi-axis) of a blob's cut; q < 1 inside. None if absent."""
    cut = blob.section(z)
    if cut is None:
        return None
    cx, cy, ax, ay, lobes = cut
    reach = 1.0 + np.abs(lobes[:, 1]).sum()
    win = canvas.window(
        cx - ax * reach - margin, cx + ax * reach + margin, cy - ay * reach - margin, cy + ay * reach + margin
    )
    if win is None:
        return None
    return win, _blob_q(canvas, blob, z, win), min(ax, ay)


def _tube_cut(canvas: _Canvas, tube: Tube, z: float):
    """(organ, lumen) boolean masks of a tube's cut at ``z`` over the whole slice; None if absent.

    The lumen is the organ less its wall: points deeper than ``wall_mm`` inside some sphere.
    """
    path = tube.path
    pts = path[np.abs(path[:, 2] - z) < path[:, 3]]
    if not len(pts):
        return None
    x, y = canvas.x, canvas.y
    step = float(x[1] - x[0])
    half = int(np.ceil(pts[:, 3].max() / step)) + 1
    offsets = np.arange(-half, half + 1)
    # Every sphere's cut is evaluated in a fixed-size square of pixels around its centre, all at once.
    cols = np.rint((pts[:, 0] - x[0]) / step).astype(np.int64)[:, None] + offsets
    rows = np.rint((pts[:, 1] - y[0]) / step).astype(np.int64)[:, None] + offsets
    cols_ok = (cols >= 0) & (cols < len(x))
    rows_ok = (rows >= 0) & (rows < len(y))
    cols, rows = np.clip(cols, 0, len(x) - 1), np.clip(rows, 0, len(y) - 1)
    dx2 = (x[cols] - pts[:, :1]) ** 2
    dy2 = (y[rows] - pts[:, 1:2]) ** 2
    dz2 = (z - pts[:, 2]) ** 2
    depth = pts[:, 3, None, None] - np.sqrt(dy2[:, :, None] + dx2[:, None, :] + dz2[:, None, None])
    valid = rows_ok[:, :, None] & cols_ok[:, None, :]
    flat = rows[:, :, None] * len(x) + cols[:, None, :]
    masks = []
    for threshold in (0.0, tube.wall_mm):
        mask = np.zeros(len(x) * len(y), dtype=bool)
        mask[flat[valid & (depth > threshold)]] = True  # repeated indices are harmless: all write True
        masks.append(mask.reshape(len(y), len(x)))
    return masks


def render(anatomy: Anatomy, z: float, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free slice at height ``z`` (mm) over columns ``x`` and rows ``y`` (mm, increasing).

    Returns the signal (H, W) float32 and the organ masks (3, H, W) uint8 in ``ORGANS`` order.
    """
    t = anatomy.tissue
    canvas = _Canvas(x, y)
    texture = anatomy.texture.sample(z, x, y)
    mottle = anatomy.mottle.sample(z, x, y)
    full = (slice(None), slice(None))
    ax, ay = anatomy.body_axes
    ax = ax * (1.0 + 0.04 * np.sin(z / 90.0))  # the waist narrows and widens gently with height
    fat, m = anatomy.fat_mm, anatomy.muscle_mm
    below_fat = _inside_body_shape(x, y, ax - fat, ay - 0.8 * fat)
    inside = _inside_body_shape(x, y, ax - fat - m, ay - 0.8 * fat - m)  # the cavity: every organ lies in it

    canvas.paint(full, _inside_body_shape(x, y, ax, ay), t["subcutaneous_fat"] * (1 + 0.04 * texture))
    canvas.paint(full, below_fat, t["muscle"] * (1 + 0.06 * texture))
    # Thin dark septa and mesenteric vessels: the zero-crossings of a smooth random field are thin curves.
    septa = np.abs(texture) < 0.07
    canvas.paint(full, inside, t["visceral_fat"] * (1 + 0.05 * texture + 0.04 * mottle - 0.3 * septa))
    if anatomy.arms:
        for side in (-1, 1):
            win, r = _ellipse(canvas, side * (ax + 38), -5.0, 30.0, 26.0)
            if win:
                canvas.paint(win, r < 1, t["subcutaneous_fat"])
                canvas.paint(win, r < 0.75, t["muscle"] * (1 + 0.06 * texture[win]))
                canvas.paint(win, r < 0.25, t["bone_marrow"])

    for organ_blob, name in ((anatomy.liver, "liver"), (anatomy.spleen, "spleen")):
        cut = _blob_radius(canvas, organ_blob, z)
        if cut:
            win, q, _ = cut
            canvas.paint(win, (q < 1) & inside[win], t[name] * (1 + 0.05 * texture[win]))
            if name == "liver":
                for vx, vy, vr, drift in anatomy.liver_vessels:
                    vessel_win, r = _ellipse(canvas, vx + drift * z, vy, vr, vr)
                    if vessel_win:
                        canvas.paint(
                            vessel_win,
                            (r < 1) & (_blob_q(canvas, organ_blob, z, vessel_win) < 0.92) & inside[vessel_win],
                            t["liver_vessel"],
                        )

    cut = _blob_radius(canvas, anatomy.stomach, z)
    if cut:
        win, q, minor = cut
        region = (q < 1) & inside[win]
        content = np.where(mottle[win] > 0.6, t["stomach_food"], t["stomach_content"]) * (1 + 0.05 * texture[win])
        canvas.paint(win, region, t["stomach_wall"], _STOMACH)
        canvas.paint(win, region & (q < 1 - 4.5 / minor), content, _STOMACH)
        if anatomy.stomach_gas > 0:
            cx, cy, sax, say, _ = anatomy.stomach.section(z)
            gas = canvas.y[win[0]][:, None] < cy - say * (1 - 2 * anatomy.stomach_gas)
            canvas.paint(win, region & gas & (q < 1 - 4.5 / minor), t["gas"], _STOMACH)

    cut = _tube_cut(canvas, anatomy.colon, z)
    if cut is not None:
        organ, lumen = cut
        stool = np.where(mottle > 0.0, t["colon_content_bright"], t["colon_content_dark"])
        stool = np.where(mottle > 1.3, t["gas"], stool)
        canvas.paint(full, organ & inside, t["colon_wall"], _LARGE)
        canvas.paint(full, lumen & inside, stool * (1 + 0.05 * texture), _LARGE)

    cut = _tube_cut(canvas, anatomy.small_bowel, z)
    if cut is not None:
        organ, lumen = cut
        canvas.paint(full, organ & inside, t["small_bowel_wall"], _SMALL)
        canvas.paint(full, lumen & inside, t["small_bowel_lumen"], _SMALL)

    for kidney in anatomy.kidneys:
        cut = _blob_radius(canvas, kidney, z)
        if cut:
            win, q, _ = cut
            canvas.paint(win, q < 1, t["kidney_cortex"])
            canvas.paint(win, q < 0.6, t["kidney_medulla"])

    # Spine, back muscles and great vessels, painted last: nothing lies on top of them.
    sy = anatomy.spine_y
    for side in (-1, 1):
        win, r = _ellipse(canvas, side * 36.0, sy + 30.0, 30.0, 22.0)
        if win:
            streaks = np.where(mottle[win] > 1.0, t["visceral_fat"], t["muscle"])
            canvas.paint(win, (r < 1.0) & below_fat[win], streaks)
    win, r = _ellipse(canvas, 0.0, sy, 23.0, 19.0)
    if win:
        disc = (z % 32.0) < 7.0  # intervertebral discs every ~32 mm
        canvas.paint(win, r < 1.0, t["cortical_bone"])
        canvas.paint(win, r < 0.88, t["disc"] if disc else t["bone_marrow"] * (1 + 0.08 * mottle[win]))
    win, r = _ellipse(canvas, 0.0, sy + 28.0, 16.0, 13.0)
    if win:
        canvas.paint(win, r < 1.0, t["cortical_bone"] * 0.8)
        canvas.paint(win, r < 0.55, t["csf"])
    win, r = _ellipse(canvas, 8.0, sy - 35.0, 11.0, 11.0)
    if win:
        canvas.paint(win, r < 1.0, t["aorta"])
        canvas.paint(win, r < 0.75, t["aorta_lumen"])
    win, r = _ellipse(canvas, -22.0, sy - 33.0, 13.0, 10.0)
    if win:
        canvas.paint(win, r < 1.0, t["vena_cava"])

    masks = np.stack([canvas.owner == k for k in (_LARGE, _SMALL, _STOMACH)]).astype(np.uint8)
    return canvas.image, masks


@dataclass(frozen=True)
class Acquisition:
    """How one scan records the signal: a smooth coil bias, gain and Rician noise."""

    gain: float  # the stored value of a unit signal
    noise: float  # noise sigma relative to a unit signal
    bias: np.ndarray  # (6,) coefficients of a smooth log-bias over the image, half at the top, half at the bottom

    @staticmethod
    def random(rng: np.random.Generator) -> Acquisition:
        return Acquisition(
            gain=float(rng.uniform(1800.0, 11000.0)),
            noise=float(rng.uniform(0.008, 0.022)),
            bias=rng.normal(0.0, 0.12, 6),
        )

    def record(self, signal: np.ndarray, z_fraction: float, rng: np.random.Generator) -> np.ndarray:
        """The stored 16-bit image of ``signal`` (H, W) at ``z_fraction`` (0 top, 1 bottom) of the scan."""
        h, w = signal.shape
        # Partial-volume blur: a [1, 2, 1] / 4 pass along each axis softens the painted edges.
        s = signal.copy()
        s[1:-1] = 0.5 * s[1:-1] + 0.25 * (signal[:-2] + signal[2:])
        t = s.copy()
        s[:, 1:-1] = 0.5 * t[:, 1:-1] + 0.25 * (t[:, :-2] + t[:, 2:])
        u = np.linspace(-1.0, 1.0, w, dtype=np.float32)
        v = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        c = self.bias[:3] * (1 - z_fraction) + self.bias[3:] * z_fraction
        # exp(c0 u + c1 v + c2 (u^2 + v^2)) factors into a column term times a row term.
        s *= np.exp(c[1] * v + c[2] * (v * v - 0.6))[:, None] * np.exp(c[0] * u + c[2] * u * u)[None, :]
        real = s + self.noise * rng.standard_normal(s.shape, dtype=np.float32)
        imag = self.noise * rng.standard_normal(s.shape, dtype=np.float32)
        return np.clip(np.rint(np.hypot(real, imag) * self.gain), 0, 65535).astype(np.uint16)


def pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates (mm) of the pixel centres: columns ``x`` (W,) and rows ``y`` (H,).

    The body sits a little above the image centre, as in the real scans.
    """
    x = (np.arange(width) + 0.5 - width / 2) * SPACING_MM
    y = (np.arange(height) + 0.5 - height / 2) * SPACING_MM + 12.0
    return x.astype(np.float32), y.astype(np.float32)
