"""DSC, mean DSC, attack success and Hausdorff distance on hand-made masks, cross-checked with MONAI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from core.metrics import EMPTY_POLICIES, attack_success, dice_per_organ, hausdorff_per_organ, mean_dsc
from core.models.inference import predict
from segadv_tui.render.tables import format_score


def _masks(*organs):
    """(1, 3, 6, 6) bool masks; each organ given as a list of (row, col) pixels."""
    masks = np.zeros((1, 3, 6, 6), dtype=bool)
    for channel, pixels in enumerate(organs):
        for row, col in pixels:
            masks[0, channel, row, col] = True
    return masks


def _dice_by_hand(pred: np.ndarray, truth: np.ndarray, both_empty: float) -> np.ndarray:
    inter = (pred & truth).sum((2, 3)).astype(float)
    sizes = pred.sum((2, 3)) + truth.sum((2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes == 0, both_empty, 2 * inter / sizes)


def test_overlap_and_every_empty_case_under_every_policy():
    square = [(0, 0), (0, 1), (1, 0), (1, 1)]
    shifted = [(1, 0), (1, 1), (2, 0), (2, 1)]
    # organ 0: half overlap; organ 1: predicted where truth is empty; organ 2: empty in both
    pred = _masks(square, [(3, 3)], [])
    truth = _masks(shifted, [], [])
    expected_third = {"one": 1.0, "skip": np.nan, "zero": 0.0}
    for policy in EMPTY_POLICIES:
        dsc = dice_per_organ(pred, truth, policy)
        assert dsc.dtype == np.float64 and dsc.shape == (1, 3)
        np.testing.assert_array_equal(dsc, [[0.5, 0.0, expected_third[policy]]])
    # truth present, prediction empty: 0 under every policy
    for policy in EMPTY_POLICIES:
        np.testing.assert_array_equal(dice_per_organ(_masks([], [], []), _masks(square, [], []), policy)[0, 0], 0.0)
    assert mean_dsc(dice_per_organ(pred, truth, "one"))[0] == pytest.approx(0.5)
    assert mean_dsc(dice_per_organ(pred, truth, "skip"))[0] == pytest.approx(0.25)
    assert mean_dsc(dice_per_organ(pred, truth, "zero"))[0] == pytest.approx(0.5 / 3)


def test_random_masks_match_hand_formula_and_monai_dice_metric():
    rng = np.random.default_rng(0)
    pred = rng.random((20, 3, 16, 16)) > 0.6
    truth = rng.random((20, 3, 16, 16)) > 0.6
    pred[:5, 1] = False  # empty prediction with truth present
    truth[3:8, 2] = False  # empty truth, prediction present
    pred[6:8, 2] = False  # empty in both
    for policy, both_empty in (("one", 1.0), ("zero", 0.0), ("skip", np.nan)):
        np.testing.assert_allclose(
            dice_per_organ(pred, truth, policy), _dice_by_hand(pred, truth, both_empty), rtol=1e-6
        )
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    metric(torch.from_numpy(pred).float(), torch.from_numpy(truth).float())
    np.testing.assert_allclose(dice_per_organ(pred, truth, "one"), metric.aggregate().numpy(), rtol=1e-6)
    # MONAI's ignore_empty=True drops every empty-truth organ; ours drops only empty-in-both under "skip".
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=True)
    metric(torch.from_numpy(pred).float(), torch.from_numpy(truth).float())
    has_truth = truth.any((2, 3))
    np.testing.assert_allclose(
        dice_per_organ(pred, truth, "skip")[has_truth], metric.aggregate().numpy()[has_truth], rtol=1e-6
    )


def test_torch_inputs_and_shape_errors():
    pred = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    np.testing.assert_array_equal(dice_per_organ(pred, pred.float()), np.ones((2, 3)))
    with pytest.raises(ValueError, match="same shape"):
        dice_per_organ(pred, torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="'none'"):
        dice_per_organ(pred, pred, "none")


def test_mean_dsc_ignores_skipped_organs_and_all_skipped_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means = mean_dsc([[0.5, np.nan, 1.0], [np.nan, np.nan, np.nan]])
    assert means[0] == pytest.approx(0.75)
    assert np.isnan(means[1])


def test_attack_success_is_undefined_when_clean_dsc_is_zero():
    success = attack_success([[0.8, 0.0, 0.5, np.nan]], [[0.2, 0.3, 0.75, 0.1]])
    np.testing.assert_allclose(success, [[0.75, np.nan, -0.5, np.nan]])
    assert format_score(success[0, 1]) == "n/a"
    assert format_score(0.75) == "0.750"


def test_predict_thresholds_sigmoid_at_one_half():
    class Fixed(torch.nn.Module):
        def forward(self, image):
            return torch.tensor([-1.0, 0.0, 1e-6]).view(1, 3, 1, 1).expand(image.shape[0], 3, *image.shape[2:])

    masks = predict(Fixed(), torch.zeros(2, 1, 2, 2))
    assert masks.dtype == torch.bool and masks.shape == (2, 3, 2, 2)
    # sigmoid(0) = 0.5 is not above the threshold
    assert masks[:, 0].sum() == 0 and masks[:, 1].sum() == 0 and masks[:, 2].all()


def test_hausdorff_distance_on_known_shapes():
    pred = _masks([(0, 0)], [(0, 0)], [])
    truth = _masks([(0, 4)], [], [(2, 2)])
    distances = hausdorff_per_organ(pred, truth, percentile=None)
    assert distances[0, 0] == pytest.approx(4.0)
    assert np.isnan(distances[0, 1]) and np.isnan(distances[0, 2])  # one side empty: undefined
    spaced = hausdorff_per_organ(pred, truth, percentile=95, spacing=(1.5, 1.5))
    assert spaced[0, 0] == pytest.approx(6.0)
