"""The RGB composition shared by the terminal views and the PNG figures, against hand-made references."""

from __future__ import annotations

import numpy as np
import pytest

from segadv_tui.render.imagery import (
    FILL_ALPHA,
    FN_COLOUR,
    FP_COLOUR,
    ORGAN_COLOURS,
    TP_COLOUR,
    LayerCache,
    Scene,
    Window,
    boundary,
    compose,
    coverage,
    difference_map,
    gray,
    overlay,
    touched,
)

STOMACH = ORGAN_COLOURS["stomach"]


def square_masks(size: int = 16, organ: int = 2, box=(4, 12, 4, 12)) -> np.ndarray:
    masks = np.zeros((3, size, size), dtype=bool)
    top, bottom, left, right = box
    masks[organ, top:bottom, left:right] = True
    return masks


def test_boundary_is_the_one_pixel_edge_of_each_mask():
    masks = square_masks()
    edge = boundary(masks)[2]
    expected = masks[2].copy()
    expected[5:11, 5:11] = False
    assert np.array_equal(edge, expected)
    assert not boundary(masks)[:2].any()
    # A mask touching the image's edge is outlined along it.
    full = np.ones((1, 4, 4), dtype=bool)
    assert boundary(full)[0].sum() == 12


def test_coverage_is_the_area_fraction_when_shrinking_and_nearest_when_growing():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    assert coverage(mask, 2, 2).tolist() == [[0.25, 0.0], [0.0, 0.0]]
    assert np.array_equal(coverage(mask, 8, 8), mask.repeat(2, 0).repeat(2, 1).astype(np.float32))
    # A one-pixel line survives shrinking in ``touched``, not in coverage's half-tone.
    line = np.zeros((8, 8), dtype=bool)
    line[3, :] = True
    assert touched(line, 4, 4)[1].all() and touched(line, 4, 4).sum() == 4


def test_native_resolution_overlay_blends_the_fill_and_draws_the_outline_solid():
    image = np.full((16, 16), 0.5, dtype=np.float32)
    masks = square_masks()
    rgb = compose(Scene(image, fill=masks, outline=masks), 16, 16)
    grey = 0.5 * 255
    inside = (1 - FILL_ALPHA) * grey + FILL_ALPHA * np.array(STOMACH)
    assert np.abs(rgb[8, 8].astype(float) - inside).max() <= 0.5
    assert tuple(rgb[4, 8]) == STOMACH  # the outline: exactly the organ's colour
    assert tuple(rgb[0, 0]) == (128, 128, 128)
    # Hiding the organ leaves the slice.
    hidden = compose(Scene(image, fill=masks, outline=masks, visible=(True, True, False)), 16, 16)
    assert np.array_equal(hidden, gray(image))
    assert np.array_equal(overlay(image, masks), compose(Scene(image, fill=masks), 16, 16))


def test_difference_map_colours_are_exact_and_a_miss_wins():
    truth = square_masks()
    prediction = square_masks(box=(6, 14, 4, 12))
    prediction[0, 0, 0] = True  # a false positive of another organ
    rgb = difference_map(truth, prediction)
    assert tuple(rgb[8, 8]) == TP_COLOUR and tuple(rgb[4, 8]) == FN_COLOUR and tuple(rgb[13, 8]) == FP_COLOUR
    assert tuple(rgb[0, 0]) == FP_COLOUR and tuple(rgb[15, 15]) == (0, 0, 0)
    assert set(map(tuple, rgb.reshape(-1, 3))) == {(0, 0, 0), TP_COLOUR, FP_COLOUR, FN_COLOUR}
    only_large_bowel = difference_map(truth, prediction, visible=(True, False, False))
    assert tuple(only_large_bowel[0, 0]) == FP_COLOUR and tuple(only_large_bowel[8, 8]) == (0, 0, 0)
    # Over the dimmed slice, the background is the slice at the dim factor.
    dimmed = compose(Scene(np.ones((16, 16), np.float32), difference=(truth, prediction), dim=0.5), 16, 16)
    assert tuple(dimmed[15, 15]) == (128, 128, 128)


def test_a_window_is_the_crop_of_the_whole_picture():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    masks = rng.random((3, 32, 32)) > 0.7
    scene = Scene(image, fill=masks, outline=masks)
    whole = compose(scene, 32, 32)
    window = Window(5, 9, 12, 20)
    assert np.array_equal(compose(scene, 12, 20, window), whole[5:17, 9:29])
    # Drawn at twice the size, each pixel becomes a 2 x 2 block.
    assert np.array_equal(compose(scene, 24, 40, window), whole[5:17, 9:29].repeat(2, 0).repeat(2, 1))


def test_shrinking_keeps_the_outline_one_output_pixel_thin():
    image = np.zeros((64, 64), dtype=np.float32)
    masks = square_masks(64, box=(16, 48, 16, 48))
    rgb = compose(Scene(image, outline=masks), 16, 16)
    outline = (rgb == STOMACH).all(axis=2)
    assert outline[4, 4:12].all() and outline[4:12, 4].all()
    assert not outline[6:10, 6:10].any() and not outline[0].any()


@pytest.mark.parametrize("fresh_copy", [False, True])
def test_the_layer_cache_keeps_base_and_outlines_between_eps_steps(fresh_copy):
    image = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    truth = square_masks(32, box=(8, 24, 8, 24))
    cache = LayerCache()
    first = compose(Scene(image, fill=truth, outline=truth), 20, 20, cache=cache)
    assert cache.misses == 2 and cache.hits == 0  # the base and the outlines
    prediction = square_masks(32, box=(9, 25, 8, 24))
    again = (image.copy(), truth.copy()) if fresh_copy else (image, truth)
    second = compose(Scene(again[0], fill=prediction, outline=again[1]), 20, 20, cache=cache)
    assert cache.misses == 2 and cache.hits == 2
    assert np.array_equal(second, compose(Scene(image, fill=prediction, outline=truth), 20, 20))
    assert not np.array_equal(first, second)
    compose(Scene(image, fill=prediction, outline=truth), 24, 24, cache=cache)  # another size: new layers
    assert cache.misses == 4
