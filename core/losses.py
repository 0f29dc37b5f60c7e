"""Attack and training losses on organ logits, reduced per image.

Every loss takes logits (N, 3, H, W) and 0/1 targets of the same shape and returns one value per
image, shape (N,), so that attacking a batch gives exactly the gradient of attacking each image alone
(the sum of per-image losses has per-image gradients). The implementations are MONAI's (the paper's
code trained with ``monai.losses.DiceFocalLoss``), called with ``reduction="none"`` and then averaged
over the non-batch dimensions; for N = 1 that equals MONAI's own ``reduction="mean"``. BCE is torch's
``binary_cross_entropy_with_logits``, which MONAI does not wrap. MONAI is imported when a loss that
needs it is first used: importing it takes about two seconds, which the explorer's first BCE frame
should not wait for.

The segmentation attack losses were written for softmax over classes; here each organ channel is its own
binary problem (sigmoid), a (pixel, organ) is "correct" when ``logit > 0`` agrees with ``target > 0.5``,
and the weights that depend on the prediction are detached (as in the papers' code):

- ``masked-bce``: BCE of the still-correct (pixel, organ) pairs only, averaged over all of them (SEA's
  masked CE, Croce, Singh & Hein 2024): the budget goes where the model is still right.
- ``balanced-bce``: the same, averaged within each (organ, class) group (organ pixels, background pixels)
  and then over the groups present, so a small organ weighs as much as a large one (SEA's balanced
  masked CE).
- ``cos-bce``: BCE weighted by the cosine similarity of the predicted binary distribution (1 - p, p) and
  the one-hot target (CosPGD, Agnihotri et al. 2024): p_t / sqrt(p_t^2 + (1 - p_t)^2), p_t the
  probability given to the true class.
- ``seg-bce``: SegPGD's schedule (Gu et al. 2022): correct pairs weighted 1 - lambda_t, wrong ones
  lambda_t, lambda_t = (t - 1) / (2 T) at iteration t of T (``schedule=(t, T)``; FGSM is t = T = 1).
- ``js``: the Jensen-Shannon divergence between (1 - p, p) and the one-hot target (SEA); bounded by
  log 2 and flat where the model is already wrong.
- ``hallucinate``: labels absent from the target get their top-k logits pushed over the threshold, present
  ones soft Dice plus masked BCE (``core.hallucination``): aimed at the DSC of absent labels.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F

from core.errors import SegadvError
from core.hallucination import hallucinate_loss
from core.names import LOSS_NAMES, LOSS_TITLES, PAPER_LOSS_NAMES  # noqa: F401  (re-exported)

FOCAL_GAMMA = 2.0
SEGMENTATION_LOSSES = tuple(name for name in LOSS_NAMES if name not in PAPER_LOSS_NAMES + ("hallucinate",))


@cache
def _monai_loss(name: str) -> torch.nn.Module:
    """MONAI's loss module for ``name``; they hold no state, so one instance serves every call and thread."""
    from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss

    if name == "focal":
        return FocalLoss(gamma=FOCAL_GAMMA, reduction="none")
    if name == "dice":
        return DiceLoss(sigmoid=True, reduction="none")
    return DiceFocalLoss(sigmoid=True, gamma=FOCAL_GAMMA, reduction="none")


class UnknownLossError(SegadvError, ValueError):
    pass


def check_loss(name: str) -> str:
    if name not in LOSS_NAMES:
        raise UnknownLossError(f"unknown loss {name!r}; choose from {', '.join(LOSS_NAMES)}")
    return name


def _mean_per_image(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).mean(dim=1)


def _signed(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s * logits with s = +1 on target pixels, -1 elsewhere: the logit of the true class; correct mask)."""
    truth = target > 0.5
    signed = torch.where(truth, logits, -logits)
    return signed, (logits.detach() > 0) == truth


def _balanced_mean(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per image: the mean of ``values`` within each (organ, class) group, averaged over the groups present."""
    truth = (target > 0.5).flatten(2)
    values = values.flatten(2)
    groups = []
    for members in (truth, ~truth):
        count = members.sum(dim=2)
        groups.append(((values * members).sum(dim=2) / count.clamp(min=1), count > 0))
    total = sum(mean * present for mean, present in groups).sum(dim=1)
    return total / sum(present for _, present in groups).sum(dim=1)


def per_image_loss(
    name: str, logits: torch.Tensor, target: torch.Tensor, *, schedule: tuple[int, int] = (1, 1)
) -> torch.Tensor:
    """Loss ``name`` of each image in the batch, shape (N,).

    ``logits`` and ``target`` must have the same shape (N, C, H, W). The paper's notebook called these
    losses with the arguments swapped (mask first); that is done by the caller, see
    ``core.attacks`` mode ``"paper"``, and works here because every loss accepts real-valued targets
    (the segmentation losses read them as masks, ``target > 0.5``). ``schedule`` is (iteration t,
    iterations T) of the attack, read only by ``seg-bce``.
    """
    check_loss(name)
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    if logits.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) logits, got shape {tuple(logits.shape)}")
    target = target.to(logits.dtype)
    if name == "hallucinate":
        return hallucinate_loss(logits, target)
    if name in SEGMENTATION_LOSSES:
        return _segmentation_loss(name, logits, target, schedule)
    if name == "bce":
        return _mean_per_image(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))
    # For dice+focal MONAI adds the per-channel dice (N, C, 1, 1) to the per-pixel focal (N, C, H, W) by
    # broadcasting, so the per-image mean is mean(dice over channels) + mean(focal over pixels), as with "mean".
    return _mean_per_image(_monai_loss(name)(logits, target))


def _segmentation_loss(
    name: str, logits: torch.Tensor, target: torch.Tensor, schedule: tuple[int, int]
) -> torch.Tensor:
    signed, correct = _signed(logits, target)
    if name == "js":
        # JS((1 - p_t, p_t), (0, 1)) = log 2 + (p_t log p_t - (1 + p_t) log(1 + p_t)) / 2, in a form that stays
        # finite when p_t underflows (log p_t from logsigmoid).
        p_true = torch.sigmoid(signed)
        divergence = math.log(2.0) + 0.5 * (p_true * F.logsigmoid(signed) - (1 + p_true) * torch.log1p(p_true))
        return _mean_per_image(divergence)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    correct = correct.to(logits.dtype)
    if name == "masked-bce":
        return _mean_per_image(correct * bce)
    if name == "balanced-bce":
        return _balanced_mean(correct * bce, target)
    if name == "cos-bce":
        p_true = torch.sigmoid(signed.detach())
        return _mean_per_image(p_true / torch.sqrt(p_true**2 + (1 - p_true) ** 2) * bce)
    step, steps = schedule
    if not (1 <= step and 1 <= steps):
        raise ValueError(f"seg-bce needs iteration t >= 1 of T >= 1, got {schedule}")
    lam = (step - 1) / (2 * steps)
    return _mean_per_image(((1 - lam) * correct + lam * (1 - correct)) * bce)
