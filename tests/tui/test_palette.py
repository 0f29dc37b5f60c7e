"""The difference map's colours (true positive, false positive, false negative) stay apart for the common
colour-vision deficiencies, by simulation: Machado, Oliveira & Fernandes (2009), severity 1, applied in
linear RGB, then compared in CIELAB (CIE76 delta E; about 2.3 is just noticeable, over 20 reads as a
different colour at a glance).

The simulation is written out here, from the paper's matrices, as the independent reference: segadv draws
with the colours and never simulates.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from segadv_tui.render.figures import DIFFERENCE_LEGEND
from segadv_tui.render.imagery import FN_COLOUR, FP_COLOUR, TP_COLOUR

# Machado et al. 2009, Table 1, severity 1.0 (each row sums to 1: white and greys stay as they are).
MACHADO = {
    "deuteranopia": np.array(
        [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
    ),
    "protanopia": np.array(
        [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
    ),
}
# sRGB (D65) to XYZ, and the D65 white.
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
WHITE = np.array([0.95047, 1.0, 1.08883])
APART = 30.0  # delta E the simulated difference colours keep between each other
ON_BLACK = 40.0  # and from the black the difference panels are drawn on
PAPER = {"TP": (40, 200, 60), "FP": (50, 110, 255), "FN": (235, 50, 50)}  # segadv's colours before


def linear(rgb) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float64) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def lab(linear_rgb) -> np.ndarray:
    t = SRGB_TO_XYZ @ np.clip(linear_rgb, 0, 1) / WHITE
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def seen(rgb, deficiency: str | None) -> np.ndarray:
    """The CIELAB colour someone with ``deficiency`` (None: typical vision) sees for ``rgb``."""
    light = linear(rgb)
    return lab(light if deficiency is None else MACHADO[deficiency] @ light)


def delta_e(a, b, deficiency: str | None) -> float:
    return float(np.linalg.norm(seen(a, deficiency) - seen(b, deficiency)))


def test_the_simulation_matches_known_points():
    """White stays white, a grey stays grey, and the classic confusion: red and green look alike to a
    deuteranope but not to typical vision."""
    for deficiency in MACHADO:
        assert delta_e((255, 255, 255), (255, 255, 255), deficiency) == pytest.approx(0, abs=0.01)
        assert seen((128, 128, 128), deficiency) == pytest.approx(seen((128, 128, 128), None), abs=0.05)
    assert lab(linear((255, 255, 255))) == pytest.approx([100, 0, 0], abs=0.05)
    assert delta_e(PAPER["TP"], PAPER["FN"], None) > 100
    assert delta_e(PAPER["TP"], PAPER["FN"], "deuteranopia") < 15  # why the colours changed


@pytest.mark.parametrize("deficiency", [None, *MACHADO])
def test_true_false_positive_and_false_negative_differ_for_deuteranopes(deficiency):
    colours = {"TP": TP_COLOUR, "FP": FP_COLOUR, "FN": FN_COLOUR}
    for (a, first), (b, second) in itertools.combinations(colours.items(), 2):
        assert delta_e(first, second, deficiency) > APART, (deficiency, a, b)
    for name, colour in colours.items():
        assert delta_e(colour, (0, 0, 0), deficiency) > ON_BLACK, (deficiency, name)


def test_the_legends_show_the_colours_the_pictures_use():
    assert [colour for _, colour in DIFFERENCE_LEGEND] == [TP_COLOUR, FP_COLOUR, FN_COLOUR]
