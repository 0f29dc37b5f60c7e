"""Per-image attack losses against MONAI's own reductions and hand-written formulas; the segmentation
losses' gradients against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss

from core.losses import LOSS_NAMES, PAPER_LOSS_NAMES, UnknownLossError, per_image_loss


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
    return {"bce": bce.mean(), "focal": focal.mean(), "dice": dice.mean(), "focal+dice": dice.mean() + focal.mean()}[
        name
    ]


@pytest.mark.parametrize("name", PAPER_LOSS_NAMES)
def test_per_image_loss_equals_library_mean_of_each_image_alone(name, batch):
    logits, target = batch
    values = per_image_loss(name, logits, target)
    assert values.shape == (4,)
    for i in range(4):
        alone = LIBRARY_MEAN[name](logits[i : i + 1], target[i : i + 1])
        assert torch.allclose(values[i], alone, rtol=1e-6, atol=1e-7)
    # ...and a batch of one gives the library's batch result.
    assert torch.allclose(per_image_loss(name, logits[:1], target[:1])[0], LIBRARY_MEAN[name](logits[:1], target[:1]))


@pytest.mark.parametrize("name", PAPER_LOSS_NAMES)
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


# ---------------------------------------------------------------------------------------------------
# the segmentation losses: d loss / d logits in closed form (float64, numpy), weights detached


def _closed_form_gradient(name: str, z: np.ndarray, y: np.ndarray, schedule=(1, 1)) -> np.ndarray:
    """d loss / d logits of one image (C, H, W), from the definitions in core.losses' docstring."""
    n = z.size
    p = _sigmoid(z)
    s = 2 * y - 1
    p_true = _sigmoid(s * z)
    correct = ((z > 0) == (y > 0.5)).astype(float)
    bce_grad = p - y  # d BCE / dz
    if name == "masked-bce":
        return correct * bce_grad / n
    if name == "balanced-bce":
        groups = [(y == 1), (y == 0)]
        present = sum(int(g[c].any()) for g in groups for c in range(z.shape[0]))
        size = np.where(y == 1, y.sum((1, 2), keepdims=True), (1 - y).sum((1, 2), keepdims=True))
        return correct * bce_grad / (size * present)
    if name == "cos-bce":
        return p_true / np.sqrt(p_true**2 + (1 - p_true) ** 2) * bce_grad / n
    if name == "seg-bce":
        lam = (schedule[0] - 1) / (2 * schedule[1])
        return ((1 - lam) * correct + lam * (1 - correct)) * bce_grad / n
    # js = log 2 + (p_t log p_t - (1 + p_t) log(1 + p_t)) / 2: d/dp_t = log(p_t / (1 + p_t)) / 2, dp_t/dz = s p_t (1 -
    # p_t)
    return 0.5 * s * p_true * (1 - p_true) * np.log(p_true / (1 + p_true)) / n


SEGMENTATION_CASES = [
    ("masked-bce", (1, 1)),
    ("balanced-bce", (1, 1)),
    ("cos-bce", (1, 1)),
    ("seg-bce", (1, 1)),
    ("seg-bce", (7, 10)),
    ("js", (1, 1)),
]


@pytest.mark.parametrize(
    ("name", "schedule"), SEGMENTATION_CASES, ids=[f"{n}-{t}of{T}" for n, (t, T) in SEGMENTATION_CASES]
)
def test_segmentation_loss_gradient_has_its_closed_form(name, schedule, batch):
    logits, target = batch
    logits = logits.double().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(per_image_loss(name, logits, target.double(), schedule=schedule).sum(), logits)
    for i in range(logits.shape[0]):
        expected = _closed_form_gradient(name, logits[i].detach().numpy(), target[i].double().numpy(), schedule)
        np.testing.assert_allclose(grad[i].numpy(), expected, rtol=1e-9, atol=1e-15)


def test_segmentation_losses_on_a_hand_made_image():
    # One organ channel, 2 x 2: the organ is the top-left pixel. The model gets the organ pixel right
    # (logit 2) and one background pixel wrong (logit 1); the other two background pixels are right.
    z = torch.tensor([[[[2.0, 1.0], [-1.0, -3.0]]]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731

    (masked,) = torch.autograd.grad(per_image_loss("masked-bce", z, y).sum(), z)
    # the wrong pixel drops out; the others get (p - y) / 4
    np.testing.assert_allclose(masked[0, 0].numpy(), [[(sig(2) - 1) / 4, 0], [sig(-1) / 4, sig(-3) / 4]], rtol=1e-12)

    (balanced,) = torch.autograd.grad(per_image_loss("balanced-bce", z, y).sum(), z)
    # two groups present (organ: 1 pixel, background: 3): the organ pixel weighs 1 / 2, each background pixel 1 / 6
    np.testing.assert_allclose(balanced[0, 0].numpy(), [[(sig(2) - 1) / 2, 0], [sig(-1) / 6, sig(-3) / 6]], rtol=1e-12)

    (late,) = torch.autograd.grad(per_image_loss("seg-bce", z, y, schedule=(11, 10)).sum(), z)
    # lambda = 10 / 20: right and wrong pixels weigh alike, i.e. half of plain BCE
    (bce,) = torch.autograd.grad(per_image_loss("bce", z, y).sum(), z)
    np.testing.assert_allclose(late.numpy(), bce.numpy() / 2, rtol=1e-12)

    # JS: 0 where the model is certain and right, log 2 where it is certain and wrong, and a finite gradient
    confident = torch.tensor([[[[60.0, -60.0]]]], dtype=torch.float64, requires_grad=True)
    values = per_image_loss("js", confident, torch.tensor([[[[1.0, 1.0]]]], dtype=torch.float64))
    assert values.item() == pytest.approx(np.log(2) / 2, rel=1e-12)
    (grad,) = torch.autograd.grad(values.sum(), confident)
    assert torch.isfinite(grad).all() and grad.abs().max() < 1e-20


def test_seg_bce_needs_a_valid_schedule(batch):
    logits, target = batch
    with pytest.raises(ValueError, match="seg-bce"):
        per_image_loss("seg-bce", logits, target, schedule=(0, 10))
