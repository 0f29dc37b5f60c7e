"""Decathlon / nnU-Net folders of real NIfTI files, written with nibabel for the tests
(tests/core/test_decathlon.py, tests/tui/test_frames_decathlon.py)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

V2_LABELS = {"background": 0, "Grey matter": 1, "white-matter": 2}
SHAPE = (12, 10, 6)


def write_volume(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine), path)
    return path


def boxes(shape=SHAPE) -> np.ndarray:
    """Label 1 in a box over slices 1-2 of the last axis, label 2 in slice 4; slices 0, 3 and 5 empty."""
    label = np.zeros(shape, dtype=np.uint8)
    label[2:6, 3:7, 1:3] = 1
    label[7:10, 1:4, 4] = 2
    return label


def make_dataset(
    root: Path,
    cases=("a", "b", "c"),
    *,
    labels=V2_LABELS,
    affine=None,
    ending=".nii.gz",
    description: dict | None = None,
) -> Path:
    """A Decathlon folder (nnU-Net v2 dataset.json unless ``description``) of noise images and ``boxes``."""
    rng = np.random.default_rng(0)
    for case in cases:
        write_volume(root / "imagesTr" / f"{case}_0000{ending}", rng.normal(100, 10, SHAPE).astype(np.float32), affine)
        write_volume(root / "labelsTr" / f"{case}{ending}", boxes(), affine)
    (root / "dataset.json").write_text(
        json.dumps(
            description
            or {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": len(cases), "file_ending": ending}
        )
    )
    return root


PHANTOM_LABELS = {"background": 0, "disc": 1, "ring": 2, "square": 3}


def make_phantom_dataset(root: Path, cases=("p1", "p2"), slices: int = 6, size: int = 32, seed: int = 0) -> Path:
    """A Decathlon folder a small softmax model learns in seconds: per axial slice, a bright disc, the dimmer
    ring around it and, on every other slice, a square elsewhere (labels disc, ring, square) over faint
    noise; the last slice of each case holds no label."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for case in cases:
        image = rng.uniform(0.0, 0.1, (size, size, slices)).astype(np.float32)
        label = np.zeros((size, size, slices), dtype=np.uint8)
        for z in range(slices - 1):
            cy, cx = rng.integers(8, size - 8, 2)
            radius2 = (yy - cy) ** 2 + (xx - cx) ** 2
            top, left = rng.integers(0, size - 8, 2)
            square = np.zeros((size, size), dtype=bool)
            square[top : top + 8, left : left + 8] = z % 2 == 0
            disc, ring = radius2 < 25, (radius2 >= 25) & (radius2 < 64)
            square &= ~(disc | ring)
            label[..., z] = 1 * disc + 2 * ring + 3 * square
            image[..., z] += 0.8 * disc + 0.4 * ring + 0.6 * square
        write_volume(root / "imagesTr" / f"{case}_0000.nii.gz", image)
        write_volume(root / "labelsTr" / f"{case}.nii.gz", label)
    description = {"channel_names": {"0": "MRI"}, "labels": PHANTOM_LABELS, "numTraining": len(cases)}
    (root / "dataset.json").write_text(json.dumps({**description, "file_ending": ".nii.gz"}))
    return root
