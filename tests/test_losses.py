"""Per-image attack losses against MONAI's own reductions and hand-written formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss

from core.losses import LOSS_NAMES, UnknownLossError, per_image_loss


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 8, 8, generator=generator) * 3
    target = (torch.rand(4, 3, 8, 8, generator=generator) > 0.7).float()
    target[1, 2] = 0  # an organ absent from one image
    return logits, target


LIBRARY_MEAN = {
    "bce": lambda logits, target: F.binary_cross_entropy_with_logits(logits, target),
    "focal": FocalLoss(gamma=2.0),
    "dice": DiceLoss(sigmoid=True),
    "focal+dice": DiceFocalLoss(sigmoid=True, gamma=2.0),
}


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _by_hand(name: str, logits: np.ndarray, target: np.ndarray) -> float:
    """Per-image loss of one image (3, H, W), written from the textbook formulas in float64."""
    p = _sigmoid(logits)
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    pt = np.where(target == 1, p, 1 - p)
    focal = (1 - pt) ** 2 * -np.log(pt)
    smooth = 1e-5
    dice = 1 - (2 * (p * target).sum((1, 2)) + smooth) / (p.sum((1, 2)) + target.sum((1, 2)) + smooth)
    return {"bce": bce.mean(), "focal": focal.mean(), "dice": dice.mean(), "focal+dice": dice.mean() + focal.mean()}[name]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_per_image_loss_equals_library_mean_of_each_image_alone(name, batch):
    logits, target = batch
    values = per_image_loss(name, logits, target)
    assert values.shape == (4,)
    for i in range(4):
        alone = LIBRARY_MEAN[name](logits[i : i + 1], target[i : i + 1])
        assert torch.allclose(values[i], alone, rtol=1e-6, atol=1e-7)
    # ...and a batch of one gives the library's batch result.
    assert torch.allclose(per_image_loss(name, logits[:1], target[:1])[0], LIBRARY_MEAN[name](logits[:1], target[:1]))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_per_image_loss_matches_formula_by_hand(name, batch):
    logits, target = batch
    values = per_image_loss(name, logits.double(), target.double()).double().numpy()  # MONAI computes focal in float32
    for i in range(4):
        assert values[i] == pytest.approx(_by_hand(name, logits[i].double().numpy(), target[i].numpy()), rel=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_image_gradients_do_not_leak_across_the_batch(name, batch):
    logits, target = batch
    logits = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(per_image_loss(name, logits, target).sum(), logits)
    for i in (0, 3):
        alone = logits[i : i + 1].detach().clone().requires_grad_(True)
        (grad_alone,) = torch.autograd.grad(per_image_loss(name, alone, target[i : i + 1]).sum(), alone)
        assert torch.allclose(grad[i], grad_alone[0], rtol=1e-5, atol=1e-9)


def test_swapped_bce_gradient_is_minus_the_mask(batch):
    # The paper's notebook called loss(mask, logits); for BCE d/d logits is then -mask / (3 H W).
    logits, target = batch
    logits = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(per_image_loss("bce", target, logits).sum(), logits)
    assert torch.allclose(grad, -target / target[0].numel())


def test_bad_arguments_are_named():
    logits = torch.zeros(1, 3, 4, 4)
    with pytest.raises(UnknownLossError, match="'ce'"):
        per_image_loss("ce", logits, logits)
    with pytest.raises(ValueError, match="same shape"):
        per_image_loss("bce", logits, torch.zeros(1, 3, 4, 5))
