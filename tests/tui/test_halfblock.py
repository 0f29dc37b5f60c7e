"""The half-block renderer: resizing against independent references, cell colours, layout of the strips."""

from __future__ import annotations

import numpy as np
import pytest

from segadv_tui.render.halfblock import UPPER_HALF, cell_rows, fit_cells, render_strips, resize_rgb


def random_picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("factor", [2, 4, 7])
def test_shrinking_by_a_whole_factor_is_the_block_mean(factor):
    picture = random_picture(6 * factor, 5 * factor)
    reference = picture.reshape(6, factor, 5, factor, 3).astype(np.float64).mean(axis=(1, 3))
    resized = resize_rgb(picture, 6, 5)
    assert resized.dtype == np.uint8
    assert np.abs(resized.astype(np.float64) - reference).max() <= 0.5 + 1e-9


def test_growing_by_a_whole_factor_repeats_pixels():
    picture = random_picture(3, 4)
    assert np.array_equal(resize_rgb(picture, 9, 8), picture.repeat(3, axis=0).repeat(2, axis=1))


def test_growing_one_axis_and_shrinking_the_other_covers_every_cell():
    picture = random_picture(4, 40)
    resized = resize_rgb(picture, 8, 10)
    assert resized.shape == (8, 10, 3)
    # Each output row comes from one source row (grown), each column from a block of four (shrunk).
    reference = picture.reshape(4, 10, 4, 3).astype(np.float64).mean(axis=2).repeat(2, axis=0)
    assert np.abs(resized - reference).max() <= 0.5 + 1e-9


@pytest.mark.parametrize(
    ("shape", "box", "cells"),
    [((224, 224), (56, 28), (56, 28)), ((224, 224), (100, 20), (40, 20)), ((310, 360), (100, 100), (100, 43))],
)
def test_fit_keeps_the_aspect_ratio_with_square_pixels(shape, box, cells):
    assert fit_cells(*shape, *box) == cells


def test_top_pixel_is_foreground_bottom_pixel_background():
    picture = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 255, 0]]], dtype=np.uint8)
    (row,) = cell_rows(picture, 2, 1)
    first, second = row
    assert first.text == UPPER_HALF and second.text == UPPER_HALF
    assert first.style.color.triplet == (255, 0, 0) and first.style.bgcolor.triplet == (0, 0, 255)
    assert second.style.color.triplet == (0, 255, 0) and second.style.bgcolor.triplet == (0, 255, 0)


def test_equal_neighbours_merge_into_one_segment():
    picture = np.full((8, 30, 3), 77, dtype=np.uint8)
    rows = cell_rows(picture, 30, 4)
    assert [len(row) for row in rows] == [1, 1, 1, 1]
    assert rows[0][0].text == UPPER_HALF * 30


def test_strips_fill_the_box_and_centre_the_picture():
    strips = render_strips(random_picture(224, 224), 70, 20)
    assert len(strips) == 20 and all(strip.cell_length == 70 for strip in strips)
    # 224 x 224 in 70 x 20 cells is 40 x 20: 15 blank cells either side.
    text = strips[0].text
    assert text[:15] == " " * 15 and text[15:55] == UPPER_HALF * 40 and text[55:] == " " * 15
