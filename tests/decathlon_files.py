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
