"""Randomized-smoothing certification (core.evaluation.certify) against closed forms: the binomial test,
Holm and Benjamini-Hochberg against scipy, and a threshold model whose per-pixel probability under noise
is Phi((v - t) / sigma)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import false_discovery_control, norm
from torch import nn

from core.errors import OptionError
from core.evaluation.certify import (
    ABSTAIN,
    CertifyConfig,
    certified_dice,
    certify,
    certify_slice,
    label_masks,
    rejected,
    samples_needed,
)
from core.labels import UW_MADISON, label_set


class Threshold(nn.Module):
    """One sigmoid label: a pixel is positive where the (noisy) slice is above ``threshold``."""

    labels = label_set(("organ",))

    def __init__(self, threshold: float = 0.5, scale: float = 1000.0):
        super().__init__()
        self.threshold, self.scale = threshold, scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.threshold) * self.scale


def test_radius_and_tau_are_inverse():
    config = CertifyConfig(sigma=0.25, radius=0.2)
    assert config.tau == pytest.approx(norm.cdf(0.8))
    assert config.certified_radius == pytest.approx(0.2)
    assert CertifyConfig(sigma=0.5).certified_radius == pytest.approx(0.5 * norm.ppf(0.75))


def test_samples_needed_is_the_first_n_whose_unanimous_p_value_passes():
    tau, alpha, tests = 0.75, 0.001, 1024
    n = samples_needed(tau, alpha, tests)
    assert tau**n <= alpha / tests < tau ** (n - 1)


def test_holm_rejects_the_textbook_example():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, then 0.03 > 0.05/2: Holm stops there
    assert rejected(p, 0.05, "holm").tolist() == [True, False, False, True]


@pytest.mark.parametrize("seed", range(5))
def test_benjamini_hochberg_matches_scipy(seed):
    p = np.random.default_rng(seed).uniform(0, 0.02, size=(7, 9)) ** 2
    expected = false_discovery_control(p.ravel(), method="bh") <= 0.001
    assert (rejected(p, 0.001, "bh").ravel() == expected).all()


def test_holm_matches_a_loop_written_from_its_definition():
    p = np.random.default_rng(3).uniform(0, 0.01, size=200) ** 2
    alpha, m = 0.001, p.size
    expected = np.zeros(m, dtype=bool)
    for k, index in enumerate(sorted(range(m), key=lambda i: p[i])):
        if p[index] > alpha / (m - k):
            break
        expected[index] = True
    assert (rejected(p, alpha, "holm") == expected).all()


def test_a_pixel_is_certified_exactly_when_its_probability_clears_tau():
    sigma = 0.25
    # P(positive) = Phi((v - 0.5) / sigma): columns far above tau = 0.75, far below 1 - tau, and near 1/2
    values = torch.tensor([0.5 + sigma * 3, 0.5 - sigma * 3, 0.5 + sigma * 0.1, 0.5])
    image = values.repeat(4, 1).reshape(1, 1, 4, 4)
    config = CertifyConfig(sigma=sigma, n=400, n0=32)
    classes = certify_slice(Threshold(), image, config, seed=0)
    assert classes.shape == (1, 4, 4)
    assert (classes[0, :, 0] == 1).all()  # certified positive (p = 0.9987)
    assert (classes[0, :, 1] == 0).all()  # certified negative
    assert (classes[0, :, 2:] == ABSTAIN).all()  # p about 0.5: no class clears tau


def test_a_model_that_ignores_noise_certifies_every_pixel_and_keeps_its_dsc():
    class Constant(Threshold):
        def forward(self, image):
            return torch.where(torch.arange(image.shape[-1]) < 3, 5.0, -5.0).expand(image.shape[0], 1, *image.shape[2:])

    config = CertifyConfig(sigma=1.0, n=samples_needed(0.75, 0.001, 64), n0=4)
    classes = certify_slice(Constant(), torch.zeros(1, 1, 8, 8), config, seed=1)
    assert (classes != ABSTAIN).all()
    positive, abstained = label_masks(classes, "sigmoid", 1)
    truth = np.zeros((1, 8, 8), dtype=bool)
    truth[0, :, :4] = True
    # predicted columns 0-2, truth columns 0-3: DSC = 2 * 24 / (32 + 24)
    assert certified_dice(positive, abstained, truth)[0] == pytest.approx(48 / 56)


def test_abstained_pixels_count_as_wrong_on_both_sides():
    truth = np.zeros((1, 2, 4), dtype=bool)
    truth[0, 0] = True  # 4 truth pixels
    positive = np.zeros_like(truth)
    positive[0, 0, :2] = True  # 2 certified right
    abstained = np.zeros_like(truth)
    abstained[0, 0, 2] = True  # on the truth: a false negative
    abstained[0, 1, :3] = True  # off the truth: 3 false positives
    # TP 2, |truth| 4, worst prediction 2 + 3
    assert certified_dice(positive, abstained, truth)[0] == pytest.approx(4 / 9)
    assert math.isnan(certified_dice(np.zeros_like(truth), np.zeros_like(truth), np.zeros_like(truth), "skip")[0])


def test_softmax_class_maps_become_label_masks():
    classes = np.array([[[0, 1, 2, ABSTAIN]]])
    positive, abstained = label_masks(classes, "softmax", 2)
    assert positive[:, 0].tolist() == [[False, True, False, False], [False, False, True, False]]
    assert abstained[:, 0].tolist() == [[False, False, False, True]] * 2


class ThreeOrgans(Threshold):
    """UW-Madison's three sigmoid labels, each a threshold of the slice."""

    labels = UW_MADISON

    def forward(self, image):
        return (image - torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)) * 50.0


def test_too_few_samples_for_any_certificate_is_one_clear_error(tiny_demo):
    from core.data.gitract import open_dataset, select_slices

    records = select_slices(open_dataset(tiny_demo), "test", limit=1)
    with pytest.raises(OptionError, match=r"use --n \d+ or more"):
        certify(ThreeOrgans(), records, 16, CertifyConfig(n=10))


def test_certify_runs_over_data_and_is_seeded(tiny_demo):
    from core.data.gitract import open_dataset, select_slices

    records = select_slices(open_dataset(tiny_demo), "test", limit=2)
    config = CertifyConfig(sigma=0.12, n=120, n0=8, seed=4)
    first = certify(ThreeOrgans(), records, 16, config)
    second = certify(ThreeOrgans(), records, 16, config)
    assert first.to_dict()["slices"] == second.to_dict()["slices"]
    assert [row.slice_id for row in first.rows] == [record.id for record in records]
    for row in first.rows:
        assert ((0 <= row.abstain) & (row.abstain <= 1)).all()
        # a lower bound: never above the smoothed model's DSC can be, and never negative
        assert ((0 <= row.dsc_certified) & (row.dsc_certified <= 1)).all()
    assert first.to_dict()["forward_passes_per_slice"] == 128
    assert math.isclose(first.to_dict()["config"]["tau"], 0.75)


@pytest.mark.parametrize("empty", ["one", "skip", "zero"])
def test_a_label_empty_everywhere_scores_as_dice_per_organ_scores_it(empty):
    from core.metrics import dice_per_organ, empty_score

    truth = np.zeros((2, 4, 4), dtype=bool)
    truth[1, :2] = True  # label 0 empty in truth and bound, label 1 present and certified
    nothing = np.zeros_like(truth)
    bound = certified_dice(truth, nothing, truth, empty)
    plain = dice_per_organ(truth[None], truth[None], empty=empty)[0]
    np.testing.assert_array_equal(bound, plain)
    assert bound[1] == 1.0 and (np.isnan(bound[0]) if empty == "skip" else bound[0] == empty_score(empty))


class NearestLevel(nn.Module):
    """Softmax over background, disc, ring and square: the class whose grey level (0.05, 0.9, 0.45, 0.7) is
    nearest the pixel's."""

    labels = label_set(["disc", "ring", "square"], "softmax")

    def forward(self, image):
        return -200.0 * (image - torch.tensor([0.05, 0.9, 0.45, 0.7]).view(1, 4, 1, 1)) ** 2


def test_present_absent_split_recounted_from_the_maps(tmp_path, monkeypatch):
    from decathlon_files import make_phantom_dataset

    from core.data.gitract import select_slices
    from core.data.open import open_dataset

    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    records = select_slices(open_dataset(make_phantom_dataset(tmp_path / "d")), "all", organs_only=False)
    result = certify(NearestLevel(), records, 32, CertifyConfig(sigma=0.05, n=60, n0=4), keep_maps=True)
    present, shown, base_shown, dsc_present, bound_present = [], [], [], [], []
    for record, row, classes in zip(records, result.rows, result.maps):
        image, masks = record.load(32)
        predicted = NearestLevel()(torch.from_numpy(image)[None, None]).argmax(1)[0].numpy()
        for label in range(3):
            if masks[label].any():
                present.append(True)
                dsc_present.append(row.dsc_base[label])
                bound_present.append(row.dsc_certified[label])
            else:
                present.append(False)
                shown.append(bool(((classes[0] == label + 1) | (classes[0] == ABSTAIN)).any()))
                base_shown.append(bool((predicted == label + 1).any()))
    split = result.to_dict()["present_absent"]
    assert (split["present_pairs"], split["absent_pairs"]) == (sum(present), len(present) - sum(present))
    assert 0 < split["absent_pairs"] < len(present)
    assert split["dsc_base_present"] == pytest.approx(np.mean(dsc_present))
    assert split["dsc_certified_present"] == pytest.approx(np.mean(bound_present))
    assert split["shown_certified_absent"] == pytest.approx(np.mean(shown))
    assert split["shown_base_absent"] == pytest.approx(np.mean(base_shown))
    assert 0 < np.mean(dsc_present)  # the model segments the phantoms: the numbers are not all zero
    assert 0 < np.mean(shown) < 1  # some absent labels may appear (abstained pixels), others not
