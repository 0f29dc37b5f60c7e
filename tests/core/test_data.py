"""The data set reader: PNG slices, the Kaggle layout, train.csv, resizing, splits and the torch Dataset."""

from __future__ import annotations

import csv
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.gitract import (
    EXCLUDED_CASE_DAYS,
    DataError,
    GITractDataset,
    SliceRecord,
    find_slice,
    listed_slices,
    load_slice,
    open_dataset,
    read_slice,
    resize_image,
    resize_masks,
    with_organs,
)
from core.data.rle import RLEError, rle_encode
from core.organs import ORGANS

IMAGE14 = "case_unknown_image14_266_266_1.50_1.50.png"  # upper abdomen, max about 10,000
DARK = "case_unknown_slice_0001_266_266_1.50_1.50.png"  # first slice of a scan, max 125

# Width x height of the real sample ids, from their real file names (shared/real-samples/README.md).
REAL_SIZES = {"case131_day0_slice_0066": (360, 310)}  # every case123_day20 slice is 266 x 266


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """A grayscale PNG written byte by byte (filter 0, no Pillow), as an independent reference file."""
    bits = 16 if pixels.dtype == np.uint16 else 8
    height, width = pixels.shape
    raw = b"".join(b"\0" + row.astype(">u2" if bits == 16 else "u1").tobytes() for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# -- read_slice ---------------------------------------------------------------------------------------


def test_real_16_bit_slices_are_divided_by_their_own_max(real_samples):
    for name, peak in ((IMAGE14, 10_081), (DARK, 125)):
        image = read_slice(real_samples / name)
        assert image.dtype == np.float32 and image.shape == (266, 266)
        assert image.max() == 1.0 and image.min() == 0.0
        counts = image.astype(np.float64) * peak  # back to the stored 16-bit integers
        assert np.abs(counts - np.round(counts)).max() < 1e-3 * peak / 125, name
    assert (read_slice(real_samples / IMAGE14) > 0.1).mean() > 0.2  # a body, not a black frame


def test_16_bit_and_8_bit_pngs_written_by_hand(tmp_path):
    wide = np.array([[0, 1000, 65535], [40000, 7, 2]], dtype=np.uint16)
    assert np.array_equal(read_slice(write_png(tmp_path / "a.png", wide)), (wide / 65535).astype(np.float32))
    low = np.array([[0, 50], [100, 25], [3, 0]], dtype=np.uint16)  # a 16-bit file that never gets bright
    assert np.allclose(read_slice(write_png(tmp_path / "b.png", low)), low / 100, atol=1e-7)
    narrow = np.array([[0, 10, 20, 40], [5, 0, 0, 1]], dtype=np.uint8)
    image = read_slice(write_png(tmp_path / "c.png", narrow))
    assert image.dtype == np.float32 and image.shape == (2, 4)
    assert np.allclose(image, narrow / 40, atol=1e-7)


def test_an_all_zero_image_stays_zero(tmp_path):
    image = read_slice(write_png(tmp_path / "zero.png", np.zeros((5, 7), dtype=np.uint16)))
    assert image.shape == (5, 7) and image.dtype == np.float32 and not image.any() and not np.isnan(image).any()


def test_bad_image_files_raise_data_error_naming_the_path(tmp_path, real_samples):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((real_samples / IMAGE14).read_bytes()[:5000])
    text = tmp_path / "notes.png"
    text.write_text("id,class,segmentation\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "nowhere" / "slice.png"
    for path in (truncated, text, empty, missing):
        with pytest.raises(DataError, match=re.escape(str(path))):
            read_slice(path)
    assert issubclass(DataError, ValueError)


# -- a Kaggle root built from the real train.csv rows -----------------------------------------------------


def png_name(slice_id: str) -> tuple[Path, int, int]:
    """The data set path of a slice id, and its width and height."""
    case_day, number = slice_id.split("_slice_")
    width, height = REAL_SIZES.get(slice_id, (266, 266))
    case = case_day.split("_")[0]
    return Path("train", case, case_day, "scans", f"slice_{number}_{width}_{height}_1.50_1.50.png"), width, height


def add_slice(root: Path, slice_id: str, *, size: tuple[int, int] | None = None) -> Path:
    relative, width, height = png_name(slice_id)
    if size:
        width, height = size
        relative = relative.with_name(f"slice_{slice_id[-4:]}_{width}_{height}_1.50_1.50.png")
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    # A ramp that rises left to right, so a transposed read would show.
    ramp = np.tile(np.linspace(0, 4000, width, dtype=np.float64), (height, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    return path


def real_rows(real_samples: Path) -> list[dict[str, str]]:
    with (real_samples / "train_rows.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def write_csv(path: Path, rows: list[dict[str, str]], columns=("id", "class", "segmentation")) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def real_root(tmp_path, real_samples) -> Path:
    """A Kaggle root whose train.csv is the real sample rows and whose PNGs carry the real file names."""
    root = tmp_path / "kaggle"
    (root / "train").mkdir(parents=True)
    shutil.copy(real_samples / "train_rows.csv", root / "train.csv")
    for slice_id in dict.fromkeys(row["id"] for row in real_rows(real_samples)):
        add_slice(root, slice_id)
    return root


# -- a first look: one slice found before the tree is indexed ----------------------------------------------


def test_a_first_look_finds_every_listed_slice_as_the_index_records_it(real_root, tiny_demo):
    for root in (real_root, tiny_demo):
        data = GITractDataset(root)
        listed = listed_slices(root)
        assert sorted(entry.id for entry in listed) == sorted(record.id for record in data)
        for entry in listed:
            assert entry.labels_present == data.by_id(entry.id).labels_present
            assert find_slice(root, entry) == data.by_id(entry.id)  # every field: path, size, spacing, RLEs


def test_a_first_look_finds_no_slice_the_index_leaves_out_or_reads_otherwise(real_root):
    listed = {entry.id: entry for entry in listed_slices(real_root)}
    # No file for its rows.
    (real_root / png_name("case123_day20_slice_0001")[0]).unlink()
    # A second file for one slice (the index keeps the first of the two, by name).
    add_slice(real_root, "case123_day20_slice_0064", size=(300, 300))
    # A file name the reader refuses: zero pixels wide.
    path = real_root / png_name("case123_day20_slice_0066")[0]
    path.rename(path.with_name("slice_0066_0_266_1.50_1.50.png"))
    # A malformed RLE (a run past the image's end) in the rows.
    wide = listed["case131_day0_slice_0066"]
    broken = replace(wide, rles=("1 999999",) + wide.rles[1:])
    data = GITractDataset(real_root)
    for slice_id in ("case123_day20_slice_0001", "case123_day20_slice_0066"):
        assert slice_id not in {record.id for record in data}
        assert find_slice(real_root, listed[slice_id]) is None
    assert find_slice(real_root, listed["case123_day20_slice_0064"]) is None
    assert find_slice(real_root, broken) is None
    assert find_slice(real_root, listed["case123_day20_slice_0065"]) == data.by_id("case123_day20_slice_0065")


def test_a_first_look_leaves_out_the_excluded_case_days_and_refuses_a_train_csv_it_cannot_read(tmp_path):
    root = tmp_path / "kaggle"
    (root / "train").mkdir(parents=True)
    excluded = f"{EXCLUDED_CASE_DAYS[0]}_slice_0001"
    write_csv(
        root / "train.csv",
        [
            {"id": excluded, "class": "stomach", "segmentation": "1 2"},
            {"id": "case1_day1_slice_0002", "class": "stomach", "segmentation": "NaN"},
            {"id": "case1_day1_slice_0002", "class": "large_bowel", "segmentation": "5 3"},
        ],
    )
    (entry,) = listed_slices(root)
    assert (entry.id, entry.case, entry.rles) == ("case1_day1_slice_0002", 1, ("5 3", "", ""))
    write_csv(root / "train.csv", [{"id": "case1_slice_2", "class": "stomach", "segmentation": ""}])
    with pytest.raises(DataError, match="case1_slice_2"):
        listed_slices(root)
    (root / "train.csv").write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(DataError, match="train.csv"):
        listed_slices(root)


def test_the_real_rows_read_back_with_sizes_spacing_and_masks(real_root, real_samples):
    data = GITractDataset(real_root)
    assert [r.id for r in data] == [
        "case123_day20_slice_0001",
        "case123_day20_slice_0064",
        "case123_day20_slice_0065",
        "case123_day20_slice_0066",
        "case123_day20_slice_0067",
        "case131_day0_slice_0066",
    ]
    wide = data.by_id("case131_day0_slice_0066")
    assert (wide.case, wide.day, wide.slice, wide.case_day) == (131, 0, 66, "case131_day0")
    assert (wide.width, wide.height, wide.spacing) == (360, 310, (1.5, 1.5))
    assert wide.path == real_root / png_name(wide.id)[0]
    assert data.by_id("case123_day20_slice_0065").width == data.by_id("case123_day20_slice_0065").height == 266
    for row in real_rows(real_samples):
        record = data.by_id(row["id"])
        masks = record.masks()
        assert masks.shape == (3, record.height, record.width) and masks.dtype == np.uint8
        organ = ORGANS.index(row["class"])
        assert record.rles[organ] == row["segmentation"]
        assert rle_encode(masks[organ]) == row["segmentation"]
    assert wide.masks()[0].sum() == 814 and not wide.masks()[1:].any()
    assert [r.id for r in with_organs(data)] == [
        "case123_day20_slice_0065",
        "case123_day20_slice_0067",
        "case131_day0_slice_0066",
    ]
    # The sample lacks some organ rows: those slices are kept, the organ taken as absent, and said so.
    assert len(data.problems) == 2
    assert "case123_day20_slice_0066" in data.problems[0] and "stomach" in data.problems[0]
    assert "case131_day0_slice_0066" in data.problems[1] and "small_bowel, stomach" in data.problems[1]


def test_load_slice_resizes_the_non_square_slice(real_root):
    record = GITractDataset(real_root).by_id("case131_day0_slice_0066")
    image, masks = load_slice(record, img_size=64)
    assert image.shape == (64, 64) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert np.all(np.diff(image, axis=1) >= -1e-6)  # the ramp still rises left to right: not transposed
    assert masks.shape == (3, 64, 64) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert np.array_equal(masks, resize_masks(record.masks(), 64)) and masks[0].any()


def test_an_image_whose_size_contradicts_its_file_name_is_refused(real_root):
    record = GITractDataset(real_root).by_id("case131_day0_slice_0066")
    ramp = np.zeros((360, 310), dtype=np.uint16)  # 310 wide, 360 high: the file name read the wrong way round
    Image.fromarray(ramp).save(record.path)
    with pytest.raises(DataError, match="360 x 310"):
        load_slice(record, img_size=32)


def test_rows_without_images_and_images_without_rows_are_reported(real_root):
    (real_root / png_name("case123_day20_slice_0064")[0]).unlink()
    add_slice(real_root, "case123_day20_slice_0099")
    data = GITractDataset(real_root)
    ids = [r.id for r in data]
    assert "case123_day20_slice_0064" not in ids and "case123_day20_slice_0099" not in ids
    assert any("case123_day20_slice_0064" in p and "no image" in p for p in data.problems)
    assert any("case123_day20_slice_0099" in p and "no rows" in p for p in data.problems)


def test_odd_files_in_the_tree_are_reported(real_root):
    stray = real_root / "train" / "case123" / "case123_day20" / "scans" / "slice_0070.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(stray)
    data = GITractDataset(real_root)
    assert len(data) == 6 and any("slice_0070.png" in p for p in data.problems)


def test_a_missing_column_names_the_column(real_root, real_samples):
    write_csv(real_root / "train.csv", real_rows(real_samples), columns=("id", "class"))
    with pytest.raises(DataError, match="segmentation") as caught:
        GITractDataset(real_root)
    assert "train.csv" in str(caught.value)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda rows: rows + [dict(rows[0])],
            r"line 17: duplicate row for case123_day20_slice_0001 large_bowel \(first on line 2\)",
        ),
        (lambda rows: rows[:3] + [{**rows[3], "class": "liver"}] + rows[4:], r"line 5: unknown class 'liver'"),
        (lambda rows: [{**rows[0], "id": "slice_0001"}] + rows[1:], r"line 2: id 'slice_0001'"),
    ],
    ids=["duplicate", "unknown organ", "bad id"],
)
def test_bad_rows_name_the_line(real_root, real_samples, mutate, expected):
    write_csv(real_root / "train.csv", mutate(real_rows(real_samples)))
    with pytest.raises(DataError, match=expected):
        GITractDataset(real_root)


def test_unreadable_csvs_raise_data_error(real_root):
    csv_path = real_root / "train.csv"
    for content, expected in (
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "cannot read"),
        (b"id,class,segmentation\ncase1_day0_slice_0001,stomach\n", "line 2: 2 fields, expected 3"),
    ):
        csv_path.write_bytes(content)
        with pytest.raises(DataError, match=expected) as caught:
            GITractDataset(real_root)
        assert str(csv_path) in str(caught.value)


def test_a_malformed_rle_is_reported_with_id_and_organ(real_root, real_samples):
    rows = real_rows(real_samples)
    rows[7]["segmentation"] = "100 5 50 3"  # case123_day20_slice_0065 small_bowel, runs out of order
    rows[9]["segmentation"] = "1 70757"  # case123_day20_slice_0066 large_bowel, past the end of 266 x 266
    write_csv(real_root / "train.csv", rows)
    data = GITractDataset(real_root)
    assert "case123_day20_slice_0065" not in [r.id for r in data]
    assert "case123_day20_slice_0066" not in [r.id for r in data]
    assert any("case123_day20_slice_0065" in p and "small_bowel" in p and "unsorted" in p for p in data.problems)
    assert any("case123_day20_slice_0066" in p and "large_bowel" in p and "past the end" in p for p in data.problems)
    # When a record is built by hand, decoding is where the error shows, still naming id and organ.
    record = SliceRecord("case1_day0_slice_0001", 1, 0, 1, 4, 3, (1.5, 1.5), Path("x.png"), ("", "1 0", ""))
    with pytest.raises(RLEError, match=r"case1_day0_slice_0001.*small_bowel"):
        record.masks()


def test_the_faulty_case_days_are_excluded_by_default(real_root, real_samples):
    rows = real_rows(real_samples)
    for slice_id in ("case7_day0_slice_0001", "case81_day30_slice_0002", "case7_day1_slice_0001"):
        add_slice(real_root, slice_id)
        rows += [{"id": slice_id, "class": organ, "segmentation": ""} for organ in ORGANS]
    write_csv(real_root / "train.csv", rows)
    assert EXCLUDED_CASE_DAYS == ("case7_day0", "case81_day30")
    data = GITractDataset(real_root)
    case_days = {r.case_day for r in data}
    assert "case7_day1" in case_days and not case_days & set(EXCLUDED_CASE_DAYS)
    assert len(data.problems) == 2  # only the two partial sample slices: exclusion is not a problem
    everything = GITractDataset(real_root, exclude=())
    assert {"case7_day0", "case81_day30"} <= {r.case_day for r in everything}


def test_fingerprint_follows_the_labels_not_the_location(real_root, real_samples, tmp_path):
    first = GITractDataset(real_root).fingerprint()
    moved = shutil.copytree(real_root, tmp_path / "elsewhere")
    assert GITractDataset(moved).fingerprint() == first
    rows = real_rows(real_samples)
    rows[0]["segmentation"] = "1 3"
    write_csv(moved / "train.csv", rows)
    assert GITractDataset(moved).fingerprint() != first


def test_missing_roots_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*train\.csv"):
        open_dataset(tmp_path / "absent")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"no train\.csv in .*train/caseN/caseN_dayD/scans"):
        open_dataset(tmp_path)


def test_by_id_names_an_unknown_id(real_root):
    with pytest.raises(KeyError, match="case999_day0_slice_0001"):
        GITractDataset(real_root).by_id("case999_day0_slice_0001")


# -- resizing ----------------------------------------------------------------------------------------------


def test_area_resize_is_the_block_mean_for_whole_factors():
    image = np.random.default_rng(0).random((96, 96), dtype=np.float32)
    expected = image.reshape(32, 3, 32, 3).mean(axis=(1, 3))
    resized = resize_image(image, 32)
    assert resized.dtype == np.float32 and resized.shape == (32, 32)
    assert np.allclose(resized, expected, atol=1e-6)


def test_area_resize_keeps_the_mean_and_the_range_for_any_factor():
    image = np.random.default_rng(1).random((310, 360), dtype=np.float32)
    for size in (64, 224, 400):
        resized = resize_image(image, size)
        assert resized.shape == (size, size) and resized.dtype == np.float32
        assert 0.0 <= resized.min() and resized.max() <= 1.0
        assert abs(resized.mean() - image.mean()) < 1e-3
    ones = np.ones((266, 266), dtype=np.float32)
    assert np.array_equal(resize_image(ones, 224), np.ones((224, 224), dtype=np.float32))


def test_nearest_mask_resize_matches_pillow_and_stays_binary():
    masks = (np.random.default_rng(2).random((3, 310, 360)) < 0.3).astype(np.uint8)
    for size in (64, 224, 512):
        resized = resize_masks(masks, size)
        assert resized.shape == (3, size, size) and resized.dtype == np.uint8
        assert set(np.unique(resized)) <= {0, 1}
        pillow = [Image.fromarray(m * 255).resize((size, size), Image.Resampling.NEAREST) for m in masks]
        reference = np.stack([np.asarray(m) // 255 for m in pillow])
        assert np.array_equal(resized, reference)


# -- the built-in demo through the reader --------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tiny_demo) -> GITractDataset:
    return GITractDataset(tiny_demo)


def test_the_demo_reads_back_whole(demo, tiny_demo):
    with (tiny_demo / "train.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    ids = {row["id"] for row in rows}
    pngs = list((tiny_demo / "train").glob("case*/case*_day*/scans/slice_*.png"))
    assert demo.problems == []
    assert len(rows) == 3 * len(ids) and len(demo) == len(ids) == len(pngs) > 0
    assert {row["class"] for row in rows} == set(ORGANS)
    for record in demo:
        organ_rows = {row["class"]: row["segmentation"] for row in rows if row["id"] == record.id}
        assert record.rles == tuple(organ_rows[organ] for organ in ORGANS)
    sizes = {(r.width, r.height) for r in demo}
    assert len(sizes) >= 2 and any(w != h for w, h in sizes)
    assert len({r.case for r in demo}) >= 2
    with_gt = {row["id"] for row in rows if row["segmentation"]}
    assert {r.id for r in with_organs(demo)} == with_gt
    assert 0 < len(with_gt) < len(ids)  # some slices show no organ
    for organ in range(3):
        assert any(r.rles[organ] for r in demo), ORGANS[organ]


def test_the_demo_masks_and_images_agree_in_size(demo):
    by_size = {}
    for record in demo:
        by_size.setdefault((record.width, record.height), record)
    for (width, height), record in by_size.items():
        assert read_slice(record.path).shape == (height, width)
        assert record.masks().shape == (3, height, width)


def test_the_split_is_by_case_and_deterministic(demo):
    train, test = demo.split()
    assert train and test
    assert not {r.case for r in train} & {r.case for r in test}
    assert sorted(train + test, key=lambda r: (r.case, r.day, r.slice)) == demo.records
    assert demo.split(seed=0) == (train, test)
    assert GITractDataset(demo.root).split(seed=0) == (train, test)
    splits = {tuple(sorted({r.case for r in demo.split(test_fraction=0.5, seed=seed)[1]})) for seed in range(8)}
    assert len(splits) > 1  # the seed chooses the cases
    n_cases = len({r.case for r in demo})
    for fraction in (0.01, 0.99):
        train, test = demo.split(test_fraction=fraction)
        assert 1 <= len({r.case for r in test}) <= n_cases - 1
    with pytest.raises(ValueError):
        demo.split(test_fraction=1.0)


def test_slice_dataset_items(demo):
    import torch

    from core.data.slice_dataset import SliceDataset

    records = with_organs(demo)[:3] + [r for r in demo if not r.has_organs][:1]
    dataset = SliceDataset(records, img_size=64)
    assert isinstance(dataset, torch.utils.data.Dataset) and len(dataset) == 4
    for i, record in enumerate(records):
        image, masks = dataset[i]
        assert image.shape == (1, 64, 64) and image.dtype == torch.float32
        assert masks.shape == (3, 64, 64) and masks.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1 and set(masks.unique().tolist()) <= {0.0, 1.0}
        expected_image, expected_masks = load_slice(record, 64)
        assert np.array_equal(image[0].numpy(), expected_image) and np.array_equal(masks.numpy(), expected_masks)
        assert bool(masks.any()) == record.has_organs
    images, masks = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert images.shape == (4, 1, 64, 64) and masks.shape == (4, 3, 64, 64)


def test_slice_dataset_reads_lazily(real_root):
    from core.data.slice_dataset import SliceDataset

    records = GITractDataset(real_root).records
    records[0].path.unlink()  # construction reads nothing, so only that item fails
    dataset = SliceDataset(records, img_size=32)
    assert dataset[1][0].shape == (1, 32, 32)
    with pytest.raises(DataError, match="not found"):
        dataset[0]


def test_importing_core_data_does_not_load_torch():
    code = "import sys, core.data; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
