"""The MNI152 data set: real MRI (nilearn's ICBM152 2009a template) in the Decathlon layout (core.data.mni152)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from core.data.decathlon import DecathlonDataset
from core.data.mni152 import COPYRIGHT, LABELS, write_mni152_dataset
from core.data.open import open_dataset

pytest.importorskip("nilearn")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_mni152_dataset(tmp_path_factory.mktemp("mni") / "MNI152", size="tiny", seed=0)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))


def test_it_is_a_decathlon_data_set_with_the_template_notice(tiny):
    data = open_dataset(tiny)
    assert isinstance(data, DecathlonDataset) and data.problems == [] and len(data.cases) == 3
    assert data.labels.names == ("grey_matter", "white_matter", "other_brain") and data.labels.kind == "softmax"
    assert data.labels.titles["grey_matter"] == "Grey matter"
    assert {record.spacing for record in data} == {(4.0, 4.0)}
    description = json.loads((tiny / "dataset.json").read_text())
    assert description["licence"] == COPYRIGHT and "Fonov" in description["reference"]
    assert description["labels"] == LABELS and len(description["segadv"]["cases"]) == 3
    notice = (tiny / "NOTICE").read_text()
    assert COPYRIGHT in notice and "provided that the above copyright notice appear in all copies" in notice
    assert 0 < sum(record.has_labels for record in data) < len(data)  # the slices above and below the brain


def test_label_fractions_are_plausible_and_the_image_agrees(tiny):
    """Grey and white matter each 5 % to 60 % of the brain, the rest non-empty; and the T1 contrast the
    labels must show on real MRI: white matter brighter than grey matter, grey brighter than the rest."""
    for volume in open_dataset(tiny).cases:
        image, labels = volume.volumes()
        brain = labels > 0
        fractions = [(labels == value).sum() / brain.sum() for value in (1, 2, 3)]
        assert 0.05 <= fractions[0] <= 0.60 and 0.05 <= fractions[1] <= 0.60 and fractions[2] > 0.02
        grey, white, rest = (image[labels == value].mean() for value in (1, 2, 3))
        assert white > grey + 0.1 and grey > rest, volume.case


def test_the_cases_differ_and_are_stored_in_two_orientations(tiny):
    labels = [np.asarray(nib.load(tiny / "labelsTr" / f"mni152_{i:03d}.nii.gz").dataobj) for i in range(3)]
    assert all(not np.array_equal(labels[0], other) for other in labels[1:])
    codes = [nib.aff2axcodes(nib.load(tiny / "imagesTr" / f"mni152_{i:03d}_0000.nii.gz").affine) for i in range(3)]
    assert codes == [("R", "A", "S"), ("R", "A", "S"), ("L", "P", "S")]
    cases = json.loads((tiny / "dataset.json").read_text())["segadv"]["cases"]
    assert [case["mirrored"] for case in cases] == [False, True, False]


def test_the_same_seed_writes_the_same_volumes(tiny, tmp_path):
    again = write_mni152_dataset(tmp_path / "again", size="tiny", seed=0)
    other = write_mni152_dataset(tmp_path / "other", size="tiny", seed=1)
    name = "labelsTr/mni152_001.nii.gz"
    same = np.asarray(nib.load(again / name).dataobj)
    assert np.array_equal(same, np.asarray(nib.load(tiny / name).dataobj))
    assert not np.array_equal(same, np.asarray(nib.load(other / name).dataobj))
    with pytest.raises(FileExistsError, match="not empty"):
        write_mni152_dataset(again, size="tiny")
