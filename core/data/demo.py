"""The built-in demo data set: synthetic phantom scans written in exactly the Kaggle layout.

``train.csv`` (``id,class,segmentation``, three rows per slice in ``ORGANS`` order, row-major RLE) and
``train/caseN/caseN_dayD/scans/slice_NNNN_W_H_1.50_1.50.png`` as 16-bit PNGs, so every other part of
the tool reads it with the same code as the real data.
"""

from __future__ import annotations

import shutil
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.phantom import SCAN_LENGTH_MM, SPACING_MM, Acquisition, Patient, pixel_grid, render
from core.data.rle import rle_encode
from core.errors import OptionError
from core.files import atomic_write, temporary_sibling, write_csv, write_folder
from core.organs import ORGANS
from core.paths import cache_dir
from core.progress import Progress

SIZES = ("tiny", "default")
# (width, height) of the real scans; a 360 x 310 image has 310 rows of 360 columns.
IMAGE_SHAPES = ((266, 266), (360, 310))
# Case-days the real data set marks as faulty: the demo never uses their numbers.
_AVOID_CASES = (7, 81)

# Part of the cache folder's name: bump it whenever the generator's output changes, so that nobody
# keeps using (or training on) a demo made by an older generator.
DEMO_VERSION = 2


@dataclass(frozen=True)
class _Scan:
    case: int
    day: int
    width: int
    height: int
    slices: int
    patient: Patient
    day_seed: np.random.SeedSequence
    acquisition_seed: np.random.SeedSequence


def _plan(seed: int, size: str) -> list[_Scan]:
    """Which cases, days, image sizes and slice counts to make, all drawn from ``seed``."""
    if size not in SIZES:
        raise OptionError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"the demo seed must be a non-negative integer, got {seed!r}")
    root = np.random.SeedSequence(int(seed))
    rng = np.random.default_rng(root.spawn(1)[0])
    n_cases = 4 if size == "tiny" else 8
    candidates = [c for c in range(2, 151) if c not in _AVOID_CASES]
    cases = sorted(rng.choice(candidates, size=n_cases, replace=False).tolist())
    if size == "tiny":
        day_counts = [1] * n_cases
        day_counts[int(rng.integers(n_cases))] = 2
    else:
        day_counts = rng.integers(1, 3, n_cases).tolist()
    # Alternate the image shapes over cases so that every data set holds both.
    first = int(rng.integers(2))
    scans = []
    for i, (case, patient_seed) in enumerate(zip(cases, root.spawn(n_cases))):
        patient = Patient(patient_seed)
        width, height = IMAGE_SHAPES[(i + first) % 2]
        days = sorted(rng.choice(41, size=day_counts[i], replace=False).tolist())
        for day, (day_seed, acq_seed) in zip(days, (s.spawn(2) for s in patient_seed.spawn(len(days)))):
            slices = 6 if size == "tiny" else int(rng.integers(24, 33))
            scans.append(_Scan(case, day, width, height, slices, patient, day_seed, acq_seed))
    return scans


def _write_into(folder: Path, scans: list[_Scan], progress: Progress | None) -> None:
    total = sum(scan.slices for scan in scans)
    done = 0
    rows = []
    for scan in scans:
        anatomy = scan.patient.on_day(scan.day_seed)
        acquisition = Acquisition.random(np.random.default_rng(scan.acquisition_seed))
        noise = np.random.default_rng(scan.acquisition_seed.spawn(1)[0])
        scans_dir = folder / "train" / f"case{scan.case}" / f"case{scan.case}_day{scan.day}" / "scans"
        scans_dir.mkdir(parents=True)
        x, y = pixel_grid(scan.width, scan.height)
        for index in range(scan.slices):
            z_fraction = index / (scan.slices - 1)
            signal, masks = render(anatomy, z_fraction * SCAN_LENGTH_MM, x, y)
            image = Image.fromarray(acquisition.record(signal, z_fraction, noise))
            number = index + 1
            name = f"slice_{number:04d}_{scan.width}_{scan.height}_{SPACING_MM:.2f}_{SPACING_MM:.2f}.png"
            # Noisy 16-bit slices gain little from LZ77 matching: Huffman-only deflate is as small as zlib's
            # default level and about 10x faster (benchmarks/bench_demo.py).
            atomic_write(
                scans_dir / name,
                partial(_write_png, image),
            )
            slice_id = f"case{scan.case}_day{scan.day}_slice_{number:04d}"
            rows += [(slice_id, organ, rle_encode(mask)) for organ, mask in zip(ORGANS, masks)]
            done += 1
            if progress is not None:
                progress(done, total)
    write_csv(folder / "train.csv", ("id", "class", "segmentation"), rows)


def write_demo_dataset(
    out, *, seed: int = 0, size: str = "default", progress: Progress | None = None, overwrite: bool = False
) -> Path:
    """Write the demo data set (Kaggle layout) to ``out`` and return ``out``.

    Written into a hidden sibling folder and renamed into place at the end, so an interrupted run
    never leaves half a data set at ``out``. An existing non-empty ``out`` is refused unless
    ``overwrite``. ``progress(done, total)`` is called after each slice.
    """
    scans = _plan(seed, size)
    return write_folder(out, lambda folder: _write_into(folder, scans, progress), overwrite=overwrite)


def demo_data_dir(seed: int = 0, progress: Progress | None = None, *, size: str = "default") -> Path:
    """The demo data set in the per-user cache, generated on first use and reused afterwards.

    Safe when two processes race: each writes its own temporary folder, the first rename wins and the
    other process uses the winner's folder.
    """
    scans = _plan(seed, size)
    name = (
        f"demo-v{DEMO_VERSION}-seed{int(seed)}" if size == "default" else f"demo-v{DEMO_VERSION}-{size}-seed{int(seed)}"
    )
    target = cache_dir() / name
    if (target / "train.csv").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(target, "writing")
    temp.mkdir()
    try:
        _write_into(temp, scans, progress)
        try:
            temp.rename(target)  # atomic; fails when another process has already put its folder there
        except OSError:
            if not (target / "train.csv").is_file():
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return target


def _write_png(image: Image.Image, stream) -> None:
    """A slice PNG, fast: level-1 Huffman-only deflate (the demo writes thousands)."""
    image.save(stream, format="PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY)
