"""The Decathlon / nnU-Net reader on real NIfTI files written with nibabel in tmp_path (core.data.decathlon,
core.data.nifti, core.data.open)."""

from __future__ import annotations

import gzip
import json
import pickle
import random
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from decathlon_files import SHAPE, boxes, make_dataset, write_volume

from core.data.decathlon import DecathlonDataset, parse_slice_axis, robust_normalise
from core.data.gitract import DataError, GITractDataset
from core.data.open import data_layout, open_dataset
from core.errors import OptionError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The on-disk label index goes to this test's folder, never the user's cache."""
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))


def single_line(problems: list[str], name: str) -> str:
    """The one problem line that names ``name``."""
    (line,) = [line for line in problems if name in line]
    assert "\n" not in line
    return line


# -- dataset.json --


def test_nnunet_v2_labels_become_a_softmax_label_set(tmp_path):
    data = open_dataset(make_dataset(tmp_path / "d"))
    assert isinstance(data, DecathlonDataset) and data.layout == "decathlon"
    assert data.labels.names == ("grey_matter", "white_matter") and data.labels.kind == "softmax"
    assert data.labels.titles == {"grey_matter": "Grey matter", "white_matter": "white-matter"}
    assert data.problems == [] and len(data) == 3 * SHAPE[2]
    assert [r.id for r in data][:2] == ["a_z000", "a_z001"] and data.by_id("c_z005").case == "c"


def test_msd_v1_labels_and_training_list(tmp_path):
    """MSD v1: labels keyed by value (ordered by value), a training list naming CASE.nii.gz; nnU-Net v1's list
    names CASE.nii.gz for a file named CASE_0000.nii.gz, and MSD's macOS copies (._CASE) are not data."""
    root = tmp_path / "Task04_Hippocampus"
    make_dataset(root, cases=("hippo_1", "hippo_2"))
    (root / "imagesTr" / "hippo_1_0000.nii.gz").rename(root / "imagesTr" / "hippo_1.nii.gz")  # MSD's own naming
    (root / "imagesTr" / "._hippo_3.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    description = {
        "modality": {"0": "MRI"},
        "labels": {"2": "Posterior", "0": "background", "1": "Anterior"},
        "training": [
            {"image": "./imagesTr/hippo_1.nii.gz", "label": "./labelsTr/hippo_1.nii.gz"},
            {"image": "./imagesTr/hippo_2.nii.gz", "label": "./labelsTr/hippo_2.nii.gz"},
        ],
    }
    (root / "dataset.json").write_text(json.dumps(description))
    data = open_dataset(root)
    assert data.labels.names == ("anterior", "posterior") and data.labels.kind == "softmax"
    assert data.problems == [] and sorted({r.case for r in data}) == ["hippo_1", "hippo_2"]
    _, masks = data.by_id("hippo_2_z004").load(SHAPE[0])
    assert masks[1].any() and not masks[0].any()  # value 2 is "Posterior", the second label


def test_the_caller_may_ask_for_sigmoid_and_regions_are_sigmoid(tmp_path):
    root = make_dataset(tmp_path / "d")
    assert open_dataset(root, kind="sigmoid").labels.kind == "sigmoid"
    regions = {"background": 0, "whole": [1, 2], "core": 2}
    make_dataset(tmp_path / "r", labels=regions)
    data = open_dataset(tmp_path / "r")
    assert data.labels.names == ("whole", "core") and data.labels.kind == "sigmoid"
    _, masks = data.by_id("a_z004").load(SHAPE[0])
    assert (masks[1] <= masks[0]).all() and masks[1].any()  # the regions overlap: core lies inside whole
    with pytest.raises(DataError, match="regions .* cannot be softmax"):
        open_dataset(tmp_path / "r", kind="softmax")
    with pytest.raises(OptionError, match="label kind"):
        open_dataset(root, kind="multiclass")


@pytest.mark.parametrize(
    "labels, message",
    [
        ({"0": "background"}, "no label besides the background"),
        ({"background": 0, "liver": "one"}, "'liver': '\"one\"' is not an integer"),
        ({"background": 1, "liver": 2}, "background must be 0"),
        ({"background": 0, "liver": 1, "tumour": 1}, "two labels share the value 1"),
        ({"background": 0, "Liver": 1, "liver": 2}, "both become the name 'liver'"),
        ({"background": 0, "liver": 40000}, "values must be 0 to 32767"),
        ([0, 1], "expected an object"),
    ],
)
def test_bad_labels_are_one_line_naming_dataset_json(tmp_path, labels, message):
    root = make_dataset(tmp_path / "d", labels=labels)
    with pytest.raises(DataError, match=message) as caught:
        open_dataset(root)
    assert str(root / "dataset.json") in str(caught.value) and "\n" not in str(caught.value)


def test_label_names_become_identifiers(tmp_path):
    labels = {"background": 0, "Left Kidney (cortex)": 1, "3rd ventricle": 2, "ÄÖ": 3}
    data = open_dataset(make_dataset(tmp_path / "d", labels=labels))
    assert data.labels.names == ("left_kidney_cortex", "label_3rd_ventricle", "label")
    assert data.labels.titles["left_kidney_cortex"] == "Left Kidney (cortex)"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "holds neither dataset.json nor train.csv"),
        (b"{not json", "dataset.json: not JSON"),
        (b"[1, 2]", "expected a JSON object, found list"),
        (b'{"name": "x"}', 'no "labels"'),
        (b'{"labels": {"background": 0, "a": 1}, "file_ending": ".png"}', "segadv reads NIfTI"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_missing_or_bad_dataset_json_is_one_line(tmp_path, content, message):
    root = make_dataset(tmp_path / "d")
    if content is None:
        (root / "dataset.json").unlink()
    else:
        (root / "dataset.json").write_bytes(content)
    with pytest.raises(DataError, match=message) as caught:
        open_dataset(root)
    assert "\n" not in str(caught.value)


def test_neither_layout_names_both(tmp_path):
    with pytest.raises(DataError) as caught:
        open_dataset(tmp_path)
    assert "dataset.json, imagesTr/CASE_0000.nii.gz" in str(caught.value) and "train.csv and train/" in str(
        caught.value
    )
    with pytest.raises(DataError, match="does not exist"):
        data_layout(tmp_path / "absent")


def test_open_dataset_picks_the_layout(tmp_path, tiny_demo):
    assert isinstance(open_dataset(tiny_demo), GITractDataset) and data_layout(tiny_demo) == "uw-madison"
    assert data_layout(make_dataset(tmp_path / "d")) == "decathlon"


# -- orientation, spacing, slices --


def test_a_voxel_lands_where_its_world_position_says(tmp_path):
    """Stored axes (superior, posterior, left) with voxel sizes (2, 1.5, 0.8) mm: after reorientation the
    voxel must sit where the world coordinates of all voxels rank it, and the spacing follows the axes."""
    affine = np.array([[0, 0, -0.8, 10], [0, -1.5, 0, 20], [2.0, 0, 0, -30], [0, 0, 0, 1]])
    stored = (6, 10, 12)
    label = np.zeros(stored, dtype=np.uint8)
    label[1, 2, 3] = 1
    root = tmp_path / "d"
    write_volume(root / "imagesTr" / "p_0000.nii.gz", np.full(stored, 7, dtype=np.int16), affine)
    write_volume(root / "labelsTr" / "p.nii.gz", label, affine)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "spot": 1}}))
    data = open_dataset(root)

    grid = np.stack(np.meshgrid(*(np.arange(n) for n in stored), indexing="ij"), -1).reshape(-1, 3)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    spot = affine[:3, :3] @ [1, 2, 3] + affine[:3, 3]
    x, y, z = (sorted(set(np.round(world[:, axis], 6))).index(round(spot[axis], 6)) for axis in range(3))
    assert (x, y, z) == (12 - 1 - 3, 10 - 1 - 2, 1)

    record = data.by_id(f"p_z{z:03d}")
    assert (record.width, record.height) == (12, 10) and record.spacing == pytest.approx((0.8, 1.5))
    assert [r.has_labels for r in data] == [i == z for i in range(6)]
    _, masks = record.load(120)  # 10 x 12 pixel blocks
    rows, cols = np.nonzero(masks[0])
    row = 10 - 1 - y  # anterior at the top
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (row * 12, row * 12 + 11, x * 10, x * 10 + 9)

    canonical = nib.as_closest_canonical(nib.load(root / "labelsTr" / "p.nii.gz"))
    assert canonical.shape == (12, 10, 6) and canonical.header.get_zooms() == pytest.approx((0.8, 1.5, 2.0))
    coronal = open_dataset(root, slice_axis=1).by_id(f"p_y{y:03d}")
    assert (coronal.width, coronal.height, coronal.spacing) == (12, 6, pytest.approx((0.8, 2.0)))
    sagittal = open_dataset(root, slice_axis=0)
    assert [r.id for r in sagittal if r.has_labels] == [f"p_x{x:03d}"]
    with pytest.raises(DataError, match="slice axis 3"):
        open_dataset(root, slice_axis=3)


def test_labels_present_per_slice(tmp_path, tiny_demo):
    data = open_dataset(make_dataset(tmp_path / "d"))
    assert [data.by_id(f"a_z{z:03d}").labels_present for z in range(SHAPE[2])] == [
        (False, False),
        (True, False),
        (True, False),
        (False, False),
        (False, True),
        (False, False),
    ]
    regions = open_dataset(make_dataset(tmp_path / "r", labels={"background": 0, "whole": [1, 2], "core": 2}))
    assert regions.by_id("a_z004").labels_present == (True, True) and regions.by_id("a_z001").labels_present == (
        True,
        False,
    )
    sagittal = open_dataset(tmp_path / "d", slice_axis=0)
    assert [r.labels_present for r in sagittal if r.case == "a"][7:11] == [(False, True)] * 3 + [(False, False)]
    record = next(r for r in GITractDataset(tiny_demo) if r.has_labels)
    assert record.labels_present == tuple(bool(m.any()) for m in record.masks())


def test_slices_load_as_the_protocol_says(tmp_path):
    data = open_dataset(make_dataset(tmp_path / "d"))
    image, masks = data.by_id("b_z004").load(32)
    assert image.shape == (32, 32) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert masks.shape == (2, 32, 32) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert masks[1].any() and not masks[0].any() and not (masks.sum(0) > 1).any()  # exclusive labels


def test_normalisation_matches_percentiles_computed_by_hand(tmp_path):
    """The robust normalisation against a second implementation: percentiles by sorting and interpolating."""
    rng = np.random.default_rng(1)
    volume = rng.gamma(2.0, 50.0, (16, 16, 4)).astype(np.float32)
    volume[:3] = 0  # background
    volume[5, 5, 0] = 1e6  # an outlier the clip removes
    root = tmp_path / "d"
    write_volume(root / "imagesTr" / "n_0000.nii.gz", volume)
    write_volume(root / "labelsTr" / "n.nii.gz", np.ones(volume.shape, dtype=np.uint8))
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "all": 1}}))

    values = np.sort(volume[volume != 0].astype(np.float64))

    def percentile(q):
        position = q / 100 * (values.size - 1)
        below = int(np.floor(position))
        return values[below] + (position - below) * (values[min(below + 1, values.size - 1)] - values[below])

    low, high = percentile(0.5), percentile(99.5)
    expected = np.clip((volume - low) / (high - low), 0, 1)
    data = open_dataset(root)
    for z in range(4):
        image, _ = data.by_id(f"n_z{z:03d}").load(16)
        np.testing.assert_allclose(image, expected[:, :, z].T[::-1], atol=1e-5)
    assert robust_normalise(np.zeros((2, 2))).max() == 0
    assert (robust_normalise(np.array([0.0, 5.0, 5.0])) == [0, 1, 1]).all()


# -- laziness --


def test_listing_reads_headers_only(tmp_path):
    """Files cut right after their header (uncompressed .nii): listing works, loading names the file."""
    root = make_dataset(tmp_path / "d", ending=".nii")
    for path in (root / "imagesTr").iterdir():
        with open(path, "r+b") as file:
            file.truncate(352)
    data = open_dataset(root)
    assert data.problems == [] and len(data) == 3 * SHAPE[2]
    assert data.by_id("a_z001").has_labels  # the label maps are whole
    with pytest.raises(DataError, match=r"cannot read .*imagesTr/a_0000\.nii"):
        data.by_id("a_z001").load(16)


def test_slices_with_labels_are_found_once_and_kept_on_disk(tmp_path):
    root = make_dataset(tmp_path / "d")
    first = [r.has_labels for r in open_dataset(root)]
    assert first == [False, True, True, False, True, False] * 3
    index = tmp_path / "cache" / "decathlon-labelled"
    assert len(list(index.iterdir())) == 3  # one small file per label file
    # The next run answers from the disk: an edited index file is what it sees.
    for path in index.iterdir():
        entry = json.loads(path.read_text())
        entry["present"][2] = "1" * (SHAPE[2] * 2)  # axial slices x labels
        path.write_text(json.dumps(entry))
    assert all(r.has_labels for r in open_dataset(root))
    # A label file that changes is read again; a damaged index file is read past.
    write_volume(root / "labelsTr" / "a.nii.gz", np.zeros(SHAPE, dtype=np.uint8))
    for path in index.iterdir():
        path.write_text("{damaged")
    assert [r.has_labels for r in open_dataset(root)] == [False] * 6 + first[6:]


def test_records_survive_pickling_for_loader_workers(tmp_path):
    record = open_dataset(make_dataset(tmp_path / "d")).by_id("c_z002")
    image, masks = record.load(24)
    copy = pickle.loads(pickle.dumps(record))
    again = copy.load(24)
    assert np.array_equal(again[0], image) and np.array_equal(again[1], masks) and copy == record


def test_slice_dataset_takes_decathlon_records(tmp_path):
    from core.data.slice_dataset import SliceDataset

    data = open_dataset(make_dataset(tmp_path / "d"))
    image, masks = SliceDataset(data.records[:4], img_size=32)[1]
    assert tuple(image.shape) == (1, 32, 32) and tuple(masks.shape) == (2, 32, 32)


# -- bad volumes: one line each, naming the file --


def test_a_missing_label_file_skips_the_case(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "labelsTr" / "b.nii.gz").unlink()
    data = open_dataset(root)
    line = single_line(data.problems, "b_0000")
    assert line.endswith("no label file labelsTr/b.nii.gz; skipped")
    assert {r.case for r in data} == {"a", "c"} and [s.file for s in data.skipped] == ["imagesTr/b_0000.nii.gz"]


def test_a_shape_mismatch_skips_the_case(tmp_path):
    root = make_dataset(tmp_path / "d")
    write_volume(root / "labelsTr" / "c.nii.gz", np.zeros((12, 10, 5), dtype=np.uint8))
    data = open_dataset(root)
    assert single_line(data.problems, "labelsTr/c") == (
        "labelsTr/c.nii.gz: 12 x 10 x 5 voxels but its image imagesTr/c_0000.nii.gz has 12 x 10 x 6; skipped"
    )
    assert {r.case for r in data} == {"a", "b"}


def test_label_values_outside_dataset_json(tmp_path):
    root = make_dataset(tmp_path / "d")
    label = boxes()
    label[0, 0, 0] = 7
    write_volume(root / "labelsTr" / "a.nii.gz", label)
    data = open_dataset(root)
    with pytest.raises(DataError) as caught:
        data.by_id("a_z001").load(16)
    message = str(caught.value)
    assert "labelsTr/a.nii.gz: label value(s) 7 not in dataset.json's labels (0, 1, 2)" in message
    assert not data.by_id("a_z000").has_labels  # counted as unlabelled, and said once
    assert single_line(data.problems, "a.nii.gz").endswith("its slices count as unlabelled")


def test_a_nan_volume_names_its_file(tmp_path):
    root = make_dataset(tmp_path / "d")
    image = np.full(SHAPE, 3.0, dtype=np.float32)
    image[1, 1, 1] = np.nan
    write_volume(root / "imagesTr" / "b_0000.nii.gz", image)
    with pytest.raises(DataError, match=r"imagesTr/b_0000\.nii\.gz: the volume holds NaN or infinite values"):
        open_dataset(root).by_id("b_z000").load(16)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(600), "Not a gzipped file"),
        (gzip.compress(b"hello" * 200), "not a NIfTI file"),
        (gzip.compress(b"\x5c\x01\x00\x00" + bytes(340)), "not a NIfTI file"),
        (b"", "not a NIfTI file"),
    ],
    # Named: gzip's header holds the time, and xdist needs the same test ids in every worker.
    ids=["png", "gzipped-text", "gzipped-short-header", "empty"],
)
def test_a_file_that_is_not_nifti_is_one_line(tmp_path, content, message):
    root = make_dataset(tmp_path / "d")
    (root / "imagesTr" / "a_0000.nii.gz").write_bytes(content)
    data = open_dataset(root)
    assert message in single_line(data.problems, "a_0000") and {r.case for r in data} == {"b", "c"}


def test_misnamed_and_unpaired_files_are_named(tmp_path):
    root = make_dataset(tmp_path / "d")
    write_volume(root / "imagesTr" / "stray.nii.gz", boxes())
    write_volume(root / "labelsTr" / "orphan.nii.gz", boxes())
    (root / "imagesTr" / "d_0001.nii.gz").write_bytes((root / "imagesTr" / "a_0000.nii.gz").read_bytes())
    data = open_dataset(root)
    assert single_line(data.problems, "stray") == "imagesTr/stray.nii.gz: not named CASE_XXXX.nii.gz; ignored"
    assert single_line(data.problems, "orphan") == "labelsTr/orphan.nii.gz: no image in imagesTr/; ignored"
    assert "no d_0000.nii.gz (the first channel)" in single_line(data.problems, "d_0001")


def test_a_multi_channel_data_set_is_refused_naming_its_channels(tmp_path):
    """The models take one channel: a data set of several is one line naming them, not one channel read unnoticed."""
    root = make_dataset(tmp_path / "d")
    description = json.loads((root / "dataset.json").read_text())
    description["channel_names"] = {"0": "T2", "1": "ADC"}
    (root / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(DataError) as raised:
        open_dataset(root)
    assert str(raised.value) == (
        f"{root / 'dataset.json'}: 2 image channels (T2, ADC); segadv's models and attacks take one channel, so "
        "multi-channel data sets are not supported (keep one channel per case as CASE_0000)"
    )


def test_a_second_channel_file_is_refused_even_when_dataset_json_names_one(tmp_path):
    root = make_dataset(tmp_path / "d")
    write_volume(root / "imagesTr" / "b_0001.nii.gz", np.zeros(SHAPE, dtype=np.float32))
    with pytest.raises(DataError, match=r"b_0000\.nii\.gz: 2 image channels; segadv's models"):
        open_dataset(root)


def test_a_four_dimensional_msd_image_is_refused(tmp_path):
    root = make_dataset(tmp_path / "d", cases=("a",))
    stacked = np.stack([np.full(SHAPE, 5.0, np.float32), np.zeros(SHAPE, np.float32)], axis=-1)
    (root / "imagesTr" / "a_0000.nii.gz").unlink()
    write_volume(root / "imagesTr" / "a.nii.gz", stacked)
    with pytest.raises(DataError, match=r"a\.nii\.gz: 2 image channels"):
        open_dataset(root)


def test_slice_axis_names_and_numbers():
    assert [parse_slice_axis(v) for v in ("axial", "Coronal", " sagittal", "2", "1", "0", 2)] == [2, 1, 0, 2, 1, 0, 2]
    for bad in ("3", "z", "", "-1", "axial2"):
        with pytest.raises(OptionError, match="expected axial \\(2\\), coronal \\(1\\) or sagittal \\(0\\)"):
            parse_slice_axis(bad)


def _header_bytes(path: Path) -> bytearray:
    return bytearray(gzip.decompress(path.read_bytes()))


def test_a_header_claiming_huge_dimensions_is_refused_without_allocating(tmp_path):
    root = make_dataset(tmp_path / "d")
    path = root / "imagesTr" / "a_0000.nii.gz"
    raw = _header_bytes(path)
    raw[40:56] = struct.pack("<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)
    path.write_bytes(gzip.compress(bytes(raw)))
    tracemalloc.start()
    try:
        data = open_dataset(root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20
    assert "its header says 30000 x 30000 x 30000 voxels; segadv reads volumes of at most" in single_line(
        data.problems, "a_0000"
    )


@pytest.mark.parametrize("esize", [-8, 0, 1 << 30])
def test_a_header_extension_of_a_bad_size_is_refused(tmp_path, esize):
    root = make_dataset(tmp_path / "d")
    path = root / "imagesTr" / "a_0000.nii.gz"
    raw = _header_bytes(path)
    raw[108:112] = struct.pack("<f", 368.0)  # voxels after one 16-byte extension
    raw[348:352] = b"\x01\x00\x00\x00"
    raw[352:352] = struct.pack("<ii", esize, 6) + bytes(8)
    path.write_bytes(gzip.compress(bytes(raw)))
    data = open_dataset(root)
    assert f"a header extension of {esize} bytes where 16 remain" in single_line(data.problems, "a_0000")


def test_a_good_header_extension_is_read(tmp_path):
    root = make_dataset(tmp_path / "d", cases=("a",))
    path = root / "imagesTr" / "a_0000.nii.gz"
    image = nib.load(path)
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment"))
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header), path)
    data = open_dataset(root)
    assert data.problems == [] and data.by_id("a_z001").load(12)[0].max() == 1


# -- split and fingerprint --


def test_split_by_case_as_gitract_splits(tmp_path):
    cases = [f"case_{i:02d}" for i in range(10)]
    data = open_dataset(make_dataset(tmp_path / "d", cases=cases))
    train, test = data.split(0.3, seed=4)
    assert not {r.case for r in train} & {r.case for r in test} and len(train) + len(test) == len(data)
    shuffled = sorted(cases)
    random.Random(4).shuffle(shuffled)
    assert {r.case for r in test} == set(shuffled[:3])
    assert data.split(0.3, seed=4) == (train, test) and data.split(0.3, seed=5) != (train, test)


def test_fingerprint_follows_the_labels_not_the_folder(tmp_path):
    first = open_dataset(make_dataset(tmp_path / "d")).fingerprint()
    (tmp_path / "d").rename(tmp_path / "moved")
    assert open_dataset(tmp_path / "moved").fingerprint() == first
    label = boxes()
    label[0, 0, 0] = 1
    write_volume(tmp_path / "moved" / "labelsTr" / "b.nii.gz", label)
    assert open_dataset(tmp_path / "moved").fingerprint() != first
    assert open_dataset(tmp_path / "moved", exclude=["b"]).fingerprint() != first


def test_nifti2_uncompressed_and_float_label_maps_are_read(tmp_path):
    root = make_dataset(tmp_path / "d", cases=("a",), ending=".nii")
    image = nib.load(root / "imagesTr" / "a_0000.nii")
    nib.save(nib.Nifti2Image(np.asanyarray(image.dataobj), image.affine), root / "imagesTr" / "a_0000.nii")
    nib.save(nib.Nifti1Image(boxes().astype(np.float32), np.eye(4)), root / "labelsTr" / "a.nii")
    data = open_dataset(root)
    assert data.problems == [] and [r.has_labels for r in data] == [False, True, True, False, True, False]
    assert data.by_id("a_z004").load(12)[1][1].any()
    fractional = boxes().astype(np.float32)
    fractional[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(fractional, np.eye(4)), root / "labelsTr" / "a.nii")
    with pytest.raises(DataError, match=r"labelsTr/a\.nii: the label map holds 0.5, not whole numbers"):
        open_dataset(root).by_id("a_z000").load(12)


def test_training_paths_outside_the_folder_are_refused(tmp_path):
    root = make_dataset(tmp_path / "d")
    for bad in ("../../etc/passwd", "/etc/passwd"):
        description = {
            "labels": {"0": "background", "1": "x"},
            "training": [{"image": bad, "label": "labelsTr/a.nii.gz"}],
        }
        (root / "dataset.json").write_text(json.dumps(description))
        with pytest.raises(DataError, match=r"training\[0\]\.image: .* is not a path inside the data folder"):
            open_dataset(root)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "x"}, "training": [3]}))
    with pytest.raises(DataError, match=r"training\[0\]: expected an object"):
        open_dataset(root)


def test_a_listed_case_whose_files_are_missing_is_named(tmp_path):
    root = make_dataset(tmp_path / "d", cases=("a",))
    training = [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]
    training.append({"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"})
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "x", "2": "y"}, "training": training})
    )
    data = open_dataset(root)
    assert {r.case for r in data} == {"a"}
    assert single_line(data.problems, "gone") == "imagesTr/gone.nii.gz: no label file labelsTr/gone.nii.gz; skipped"


def test_an_oversized_dataset_json_and_a_far_voxel_offset_are_refused(tmp_path):
    root = make_dataset(tmp_path / "d")
    with open(root / "dataset.json", "r+b") as file:
        file.truncate(17 << 20)  # sparse: nothing is written
    with pytest.raises(DataError, match="segadv reads a dataset.json of at most"):
        open_dataset(root)
    root = make_dataset(tmp_path / "e")
    path = root / "imagesTr" / "a_0000.nii.gz"
    raw = _header_bytes(path)
    raw[108:112] = struct.pack("<f", 3e9)
    path.write_bytes(gzip.compress(bytes(raw)))
    assert "puts the voxels at byte 3e+09" in single_line(open_dataset(root).problems, "a_0000")
