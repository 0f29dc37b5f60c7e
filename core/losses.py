"""Attack and training losses on organ logits, reduced per image.

Every loss takes logits (N, 3, H, W) and 0/1 targets of the same shape and returns one value per
image, shape (N,), so that attacking a batch gives exactly the gradient of attacking each image alone
(the sum of per-image losses has per-image gradients). The implementations are MONAI's (the paper's
code trained with ``monai.losses.DiceFocalLoss``), called with ``reduction="none"`` and then averaged
over the non-batch dimensions; for N = 1 that equals MONAI's own ``reduction="mean"``. BCE is torch's
``binary_cross_entropy_with_logits``, which MONAI does not wrap. MONAI is imported when a loss that
needs it is first used: importing it takes about two seconds, which the explorer's first BCE frame
should not wait for.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F

from core.names import LOSS_NAMES, LOSS_TITLES  # noqa: F401  (re-exported)
from core.errors import SegadvError

FOCAL_GAMMA = 2.0


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


def per_image_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss ``name`` of each image in the batch, shape (N,).

    ``logits`` and ``target`` must have the same shape (N, C, H, W). The paper's notebook called these
    losses with the arguments swapped (mask first); that is done by the caller, see
    ``core.attacks`` mode ``"paper"``, and works here because every loss accepts real-valued targets.
    """
    check_loss(name)
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    if logits.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) logits, got shape {tuple(logits.shape)}")
    target = target.to(logits.dtype)
    if name == "bce":
        return _mean_per_image(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))
    # For dice+focal MONAI adds the per-channel dice (N, C, 1, 1) to the per-pixel focal (N, C, H, W) by
    # broadcasting, so the per-image mean is mean(dice over channels) + mean(focal over pixels), as with "mean".
    return _mean_per_image(_monai_loss(name)(logits, target))
