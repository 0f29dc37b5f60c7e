"""HD95 and NSD in mm against closed forms: discs drawn in millimetres on anisotropic pixel grids.

Two concentric circles of radii r1 < r2 are r2 - r1 apart everywhere, so every boundary distance, their
Hausdorff distance and its 95th percentile are r2 - r1; a disc moved by d is at Hausdorff distance d from
itself. Rasterising moves a boundary by at most a pixel, so the checks hold within one pixel's size.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from core.data.gitract import GITractDataset
from core.data.rle import rle_encode
from core.errors import OptionError
from core.metrics import EMPTY_POLICIES, hausdorff_per_organ, hd95_per_organ, nsd_per_organ, slice_spacing
from core.organs import ORGANS

ROW_MM, COL_MM = 0.8, 1.4  # anisotropic on purpose: a swapped (rows, columns) order shows
PIXEL_MM = max(ROW_MM, COL_MM)


def disc(shape, spacing, centre_mm, radius_mm) -> np.ndarray:
    """Pixels whose centre lies within ``radius_mm`` of ``centre_mm`` (x right, y down, from the grid's
    centre), on a grid of ``spacing`` (rows, columns) mm per pixel."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    y = (rows - (shape[0] - 1) / 2) * spacing[0]
    x = (cols - (shape[1] - 1) / 2) * spacing[1]
    return np.hypot(x - centre_mm[0], y - centre_mm[1]) <= radius_mm


def batch(*organs) -> np.ndarray:
    """(1, organs, H, W) bool."""
    return np.stack(organs)[None]


SHAPE = (120, 80)  # 96 x 112 mm


def test_concentric_discs_are_their_radii_apart():
    spacing = (ROW_MM, COL_MM)
    inner, outer = disc(SHAPE, spacing, (0, 0), 12.0), disc(SHAPE, spacing, (0, 0), 20.0)
    hd95 = hd95_per_organ(batch(inner, outer), batch(outer, inner), spacing)
    np.testing.assert_allclose(hd95, [[8.0, 8.0]], atol=PIXEL_MM)
    full = hausdorff_per_organ(batch(inner, outer), batch(outer, inner), percentile=None, spacing=spacing)
    np.testing.assert_allclose(full, [[8.0, 8.0]], atol=PIXEL_MM)
    # The same masks read in pixels, or with the axes' spacings swapped, are not 8 mm apart.
    assert abs(hd95_per_organ(batch(inner), batch(outer))[0, 0] - 8.0) > PIXEL_MM
    swapped = hausdorff_per_organ(batch(inner), batch(outer), percentile=None, spacing=(COL_MM, ROW_MM))[0, 0]
    assert abs(swapped - 8.0) > PIXEL_MM


@pytest.mark.parametrize("offset", [(15.0, 0.0), (0.0, 15.0), (9.0, 12.0)])
def test_a_disc_moved_by_d_mm_is_d_mm_away(offset):
    spacing = (ROW_MM, COL_MM)
    here, there = disc(SHAPE, spacing, (0, 0), 18.0), disc(SHAPE, spacing, offset, 18.0)
    full = hausdorff_per_organ(batch(here), batch(there), percentile=None, spacing=spacing)[0, 0]
    assert full == pytest.approx(15.0, abs=PIXEL_MM)
    # Most boundary points move by less than d (only those along the motion move the whole way).
    assert 0 < hd95_per_organ(batch(here), batch(there), spacing)[0, 0] <= full


def test_nsd_identical_far_apart_and_the_tolerance():
    spacing = (ROW_MM, COL_MM)
    inner, outer = disc(SHAPE, spacing, (0, 0), 12.0), disc(SHAPE, spacing, (0, 0), 20.0)
    left, right = disc(SHAPE, spacing, (-25, 0), 8.0), disc(SHAPE, spacing, (25, 0), 8.0)
    np.testing.assert_array_equal(nsd_per_organ(batch(inner, outer), batch(inner, outer), 0.0, spacing), [[1, 1]])
    assert nsd_per_organ(batch(left), batch(right), 2.0, spacing)[0, 0] == 0.0
    # Every boundary distance is 8 mm (within a pixel): below the gap nothing is within tolerance, above it all is.
    below = nsd_per_organ(batch(inner), batch(outer), 8.0 - 2 * PIXEL_MM, spacing)[0, 0]
    above = nsd_per_organ(batch(inner), batch(outer), 8.0 + 2 * PIXEL_MM, spacing)[0, 0]
    assert below == 0.0 and above == 1.0
    # In between, the share grows with the tolerance.
    shares = [nsd_per_organ(batch(inner), batch(outer), t, spacing)[0, 0] for t in (7.0, 8.0, 9.0)]
    assert shares == sorted(shares) and 0 < shares[1] < 1
    with pytest.raises(OptionError, match="tolerance"):
        nsd_per_organ(batch(inner), batch(outer), -1.0, spacing)


def test_empty_labels_follow_the_policy():
    spacing = (ROW_MM, COL_MM)
    some = disc(SHAPE, spacing, (0, 0), 10.0)
    none = np.zeros(SHAPE, dtype=bool)
    # label 0: truth only (a miss), label 1: prediction only (a hallucination), label 2: empty in both
    pred, truth = batch(none, some, none), batch(some, none, none)
    diagonal = np.hypot((SHAPE[0] - 1) * ROW_MM, (SHAPE[1] - 1) * COL_MM)
    both_empty_hd = {"one": 0.0, "skip": np.nan, "zero": diagonal}
    both_empty_nsd = {"one": 1.0, "skip": np.nan, "zero": 0.0}
    for policy in EMPTY_POLICIES:
        hd = hd95_per_organ(pred, truth, spacing, policy)[0]
        np.testing.assert_allclose(hd, [diagonal, diagonal, both_empty_hd[policy]])
        nsd = nsd_per_organ(pred, truth, 2.0, spacing, policy)[0]
        np.testing.assert_array_equal(nsd, [0.0, 0.0, both_empty_nsd[policy]])


def test_spacing_per_slice_in_one_batch():
    fine, coarse = (0.5, 0.5), (1.0, 1.0)
    inner, outer = disc(SHAPE, fine, (0, 0), 10.0), disc(SHAPE, fine, (0, 0), 15.0)
    both = hd95_per_organ(np.concatenate([batch(inner)] * 2), np.concatenate([batch(outer)] * 2), [fine, coarse])
    # The same pixels at twice the pixel size are twice as far apart.
    np.testing.assert_allclose(both[:, 0], [5.0, 10.0], atol=1.0)
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_organ(batch(inner), batch(outer), [fine, coarse])


def write_slice(root, masks: np.ndarray, spacing_wh: tuple[float, float]) -> None:
    """One slice in the Kaggle layout: a PNG named with its width, height and (width, height) spacing, and
    the three organ RLEs."""
    height, width = masks.shape[1:]
    folder = root / "train" / "case1" / "case1_day0" / "scans"
    folder.mkdir(parents=True)
    name = f"slice_0001_{width}_{height}_{spacing_wh[0]:.2f}_{spacing_wh[1]:.2f}.png"
    Image.fromarray(np.full((height, width), 1000, dtype=np.uint16)).save(folder / name)
    with (root / "train.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "class", "segmentation"])
        for organ, mask in zip(ORGANS, masks):
            writer.writerow(["case1_day0_slice_0001", organ, rle_encode(mask)])


def test_a_resized_non_square_slice_keeps_its_millimetres(tmp_path):
    """A 160 x 60 slice of 0.75 x 2.0 mm pixels (120 x 120 mm) read at 64 x 64: its pixels become 1.875 mm
    square, and discs drawn 30 mm apart and 12 mm apart in the file are as far apart in the resized masks."""
    native = (2.0, 0.75)  # rows, columns
    shape = (60, 160)
    left, right = disc(shape, native, (-15, 0), 25.0), disc(shape, native, (15, 0), 25.0)
    small = disc(shape, native, (-15, 0), 13.0)
    write_slice(tmp_path, np.stack([left, right, small]).astype(np.uint8), spacing_wh=(0.75, 2.0))
    record = GITractDataset(tmp_path).records[0]
    assert record.spacing == (0.75, 2.0) and (record.width, record.height) == (160, 60)
    spacing = slice_spacing([record], 64)
    np.testing.assert_allclose(spacing, [[1.875, 1.875]])
    _, masks = record.load(64)
    masks = masks[None].astype(bool)
    moved = hausdorff_per_organ(masks[:, [0]], masks[:, [1]], percentile=None, spacing=spacing)[0, 0]
    assert moved == pytest.approx(30.0, abs=1.875 + 2.0)  # a resized pixel, plus the file's own pixel
    inside = hd95_per_organ(masks[:, [2]], masks[:, [0]], spacing)[0, 0]
    assert inside == pytest.approx(12.0, abs=1.875 + 2.0)


def test_the_attack_config_names_its_metrics_and_round_trips():
    import json

    from core.attacks.config import AttackConfig

    assert AttackConfig().metrics == ("dsc",) and "nsd_tolerance" not in AttackConfig().to_dict()
    config = AttackConfig(method="ensemble", steps=3, hausdorff=True, nsd_tolerance=1)
    assert config.metrics == ("dsc", "hd95", "nsd") and config.nsd_tolerance == 1.0
    data = json.loads(json.dumps(config.to_dict()))
    data.pop("method_label")
    assert AttackConfig(**data) == config
    # The ensemble's members score what the ensemble scores.
    assert {member.metrics for member in config.ensemble_members()} == {config.metrics}
    for bad in (-0.5, float("nan"), True):
        with pytest.raises(OptionError, match="NSD tolerance"):
            AttackConfig(nsd_tolerance=bad)
