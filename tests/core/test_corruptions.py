"""MRI corruptions (core.evaluation.corruptions) against closed forms: gamma is x ** exp(log_gamma), the
noise has the asked standard deviation, blur spreads a point as a Gaussian of the asked width; seeded per
slice, clipped to [0, 1], the input untouched."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import OptionError
from core.evaluation.corruptions import CORRUPTIONS, LEVELS, SEVERITIES, corrupt


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_is_seeded_clipped_and_leaves_the_input(name):
    torch.manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    before = images.clone()
    first = corrupt(images, name, 3, [1, 2])
    assert torch.equal(images, before)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, corrupt(images, name, 3, [1, 2]))
    # a batch is its slices one by one: each slice's artefact comes from its own seed
    assert torch.equal(first[1:], corrupt(images[1:], name, 3, [2]))
    assert not torch.equal(first, images)


def test_gamma_is_the_power_law():
    image = torch.linspace(0.05, 1, 64).reshape(1, 1, 8, 8)
    for level in range(1, LEVELS + 1):
        gamma = math.exp(SEVERITIES["gamma"][1][level - 1]["log_gamma"])
        assert torch.allclose(corrupt(image, "gamma", level, [0]), image**gamma, atol=1e-5)


def test_noise_has_the_asked_standard_deviation():
    image = torch.full((1, 1, 128, 128), 0.5)
    for level in (1, 5):
        std = SEVERITIES["noise"][1][level - 1]["std"]
        assert (corrupt(image, "noise", level, [3]) - image).std().item() == pytest.approx(std, rel=0.05)


def test_blur_spreads_a_point_as_a_gaussian_of_the_asked_width():
    image = torch.zeros(1, 1, 31, 31)
    image[0, 0, 15, 15] = 1.0
    std = SEVERITIES["blur"][1][4]["std"]
    row = corrupt(image, "blur", 5, [0])[0, 0, 15]
    # the Gaussian's profile: value at distance d over value at 0 is exp(-d^2 / (2 std^2))
    for distance in (1, 2):
        assert (row[15 + distance] / row[15]).item() == pytest.approx(math.exp(-(distance**2) / (2 * std**2)), rel=0.05)


def test_severity_grows_the_damage():
    torch.manual_seed(1)
    images = torch.rand(1, 1, 48, 48) * 0.8 + 0.1
    for name in CORRUPTIONS:
        damage = [(corrupt(images, name, level, [5]) - images).abs().mean().item() for level in (1, LEVELS)]
        assert damage[0] < damage[1], name


@pytest.mark.parametrize("name, severity, message", [("rain", 1, "unknown corruption 'rain'"), ("blur", 6, "1 to 5")])
def test_bad_names_and_levels_are_named(name, severity, message):
    with pytest.raises(OptionError, match=message):
        corrupt(torch.zeros(1, 1, 4, 4), name, severity, [0])
