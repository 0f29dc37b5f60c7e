"""The train.csv run-length codec against the real Kaggle rows and against random masks and RLEs."""

from __future__ import annotations

import csv
import re
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.data.rle import RLEError, rle_decode, rle_encode
from core.organs import ORGANS

# The real file names of the sample ids with a non-empty row (shared/real-samples/README.md).
REAL_FILE_NAMES = {
    "case123_day20_slice_0065": "slice_0065_266_266_1.50_1.50.png",
    "case123_day20_slice_0067": "slice_0067_266_266_1.50_1.50.png",
    "case131_day0_slice_0066": "slice_0066_360_310_1.50_1.50.png",
}

PROPERTY = settings(max_examples=200, deadline=None)


def height_width(file_name: str) -> tuple[int, int]:
    width, height = re.fullmatch(r"slice_\d+_(\d+)_(\d+)_.*", file_name).groups()  # width comes first
    return int(height), int(width)


def components(mask: np.ndarray) -> int:
    """Number of 4-connected blobs, by breadth-first flood fill (scipy is not installed here)."""
    mask = mask.astype(bool)
    seen = np.zeros_like(mask)
    height, width = mask.shape
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        seen[y, x] = True
        queue = deque([(y, x)])
        while queue:
            a, b = queue.popleft()
            for c, d in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                if 0 <= c < height and 0 <= d < width and mask[c, d] and not seen[c, d]:
                    seen[c, d] = True
                    queue.append((c, d))
    return count


@pytest.fixture(scope="module")
def real_rows(real_samples):
    with (real_samples / "train_rows.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 15 and {row["class"] for row in rows} == set(ORGANS)
    return rows


def non_empty(rows):
    return [row for row in rows if row["segmentation"]]


def test_real_rows_decode_in_bounds_into_compact_organs(real_rows):
    decoded = non_empty(real_rows)
    assert len(decoded) == 3
    for row in decoded:
        height, width = height_width(REAL_FILE_NAMES[row["id"]])
        mask = rle_decode(row["segmentation"], height, width, slice_id=row["id"], organ=row["class"])
        assert mask.shape == (height, width) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1}
        assert mask.sum() == sum(int(n) for n in row["segmentation"].split()[1::2])
        assert components(mask) <= 2, row["id"]


def test_the_non_square_row_is_row_major_with_the_first_number_the_width(real_rows):
    (row,) = [r for r in real_rows if r["id"] == "case131_day0_slice_0066" and r["class"] == "large_bowel"]
    height, width = height_width(REAL_FILE_NAMES[row["id"]])
    assert (height, width) == (310, 360)
    row_major = rle_decode(row["segmentation"], height, width)
    column_major = rle_decode(row["segmentation"], width, height).T  # the same runs, top to bottom first
    assert components(row_major) == 2
    assert components(column_major) > 20
    assert np.ptp(np.nonzero(column_major)[0]) > 300  # fragments smeared over every row of the image
    # Height and width swapped (the other reading of the file name) also scatters the organ.
    assert components(rle_decode(row["segmentation"], width, height)) > 2


def test_encode_gives_back_the_real_rows(real_rows):
    for row in real_rows:
        height, width = height_width(REAL_FILE_NAMES.get(row["id"], "slice_0000_266_266_1.50_1.50.png"))
        assert rle_encode(rle_decode(row["segmentation"], height, width)) == row["segmentation"]


def test_empty_string_is_the_empty_mask():
    assert rle_decode("", 3, 5).shape == (3, 5) and not rle_decode("", 3, 5).any()
    assert rle_encode(np.zeros((4, 2), dtype=np.uint8)) == ""


def test_a_hand_worked_example():
    # 1-indexed starts over the rows of a 3 x 4 image: pixels 2-3 of row 0 and all of row 2.
    expected = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.uint8)
    assert rle_encode(expected) == "2 2 9 4"
    assert (rle_decode("2 2 9 4", 3, 4) == expected).all()


@st.composite
def non_square_masks(draw):
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40).filter(lambda w: w != height))
    density = draw(st.sampled_from([0.05, 0.5, 0.95]))
    seed = draw(st.integers(0, 2**32 - 1))
    random_mask = (np.random.default_rng(seed).random((height, width)) < density).astype(np.uint8)
    return draw(st.one_of(st.just(random_mask), arrays(np.uint8, (height, width), elements=st.integers(0, 1))))


@PROPERTY
@given(non_square_masks())
def test_decode_inverts_encode_on_non_square_masks(mask):
    height, width = mask.shape
    text = rle_encode(mask)
    assert (rle_decode(text, height, width) == mask).all()
    # Runs are listed in order, never touching; their lengths add up to the mask's area.
    values = [int(v) for v in text.split()]
    assert sum(values[1::2]) == mask.sum()
    assert all(s > prev_s + prev_n for prev_s, prev_n, s in zip(values[0::2], values[1::2], values[2::2]))


@st.composite
def valid_runs(draw):
    """(height, width, [(start, length), ...]): at least two sorted, disjoint, non-touching runs."""
    height = draw(st.integers(2, 30))
    width = draw(st.integers(2, 30).filter(lambda w: w != height))
    size = height * width
    cuts = sorted(draw(st.sets(st.integers(1, size), min_size=4, max_size=min(size, 20))))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    runs = [(a, b - a) for a, b in zip(cuts[0::2], cuts[1::2])]  # run covers a .. b-1 (1-indexed)
    return height, width, runs


def text_of(runs):
    return " ".join(f"{s} {n}" for s, n in runs)


@PROPERTY
@given(valid_runs())
def test_encode_inverts_decode_on_valid_rles(case):
    height, width, runs = case
    assert rle_encode(rle_decode(text_of(runs), height, width)) == text_of(runs)


MALFORMED = (
    "odd count",
    "non-integer",
    "zero length",
    "negative length",
    "start below 1",
    "past the end",
    "overlapping",
    "unsorted",
)


def corrupt(kind: str, height: int, width: int, runs: list[tuple[int, int]], data) -> str:
    size = height * width
    i = data.draw(st.integers(0, len(runs) - 1))
    runs = list(runs)
    if kind == "odd count":
        return text_of(runs) + f" {runs[-1][0] + runs[-1][1] + 1}"
    if kind == "non-integer":
        token = data.draw(st.sampled_from(["1.5", "x", "3e2", "nan", "0x10"]))
        tokens = text_of(runs).split()
        tokens[data.draw(st.integers(0, len(tokens) - 1))] = token
        return " ".join(tokens)
    if kind == "zero length":
        runs[i] = (runs[i][0], 0)
    elif kind == "negative length":
        runs[i] = (runs[i][0], -data.draw(st.integers(1, size)))
    elif kind == "start below 1":
        runs[0] = (data.draw(st.integers(-size, 0)), runs[0][1])
    elif kind == "past the end":
        start, _ = runs[-1]
        runs[-1] = (start, size - start + 1 + data.draw(st.integers(1, size)))
    elif kind == "overlapping":
        j = min(i, len(runs) - 2)
        start, _ = runs[j]
        runs[j] = (start, runs[j + 1][0] - start + data.draw(st.integers(1, runs[j + 1][1])))
    elif kind == "unsorted":
        j = min(i, len(runs) - 2)
        runs[j], runs[j + 1] = runs[j + 1], runs[j]
    return text_of(runs)


@PROPERTY
@given(valid_runs(), st.sampled_from(MALFORMED), st.sampled_from(ORGANS), st.data())
def test_every_malformed_kind_is_rejected_naming_slice_and_organ(case, kind, organ, data):
    height, width, runs = case
    text = corrupt(kind, height, width, runs, data)
    with pytest.raises(RLEError) as caught:
        rle_decode(text, height, width, slice_id="case9_day3_slice_0042", organ=organ)
    assert "case9_day3_slice_0042" in str(caught.value) and organ in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(RLEError):  # without a name the error is still raised
        rle_decode(text, height, width)
