"""The ``hallucinate`` attack loss: aimed at how DSC scores labels absent from the truth.

A label absent from a slice's truth scores DSC 1 until a single pixel of it is predicted, and 0 after; on
the demo's test slices nearly half of the (slice, label) pairs are absent. So per image and label:

- label absent from the target: the mean of ``log sigmoid(z)`` over the ``TOP_K`` largest logits z of its
  channel (minus their BCE against "present"). An attack raises it, which pushes the pixels nearest the
  threshold over it (the fewest needed for a DSC of 0); its gradient ``sigmoid(-z)`` is near 1 far below the
  threshold and fades once they are well over it (the BCE against the truth, ``softplus(z)``, would instead
  vanish far below). The gradient reaches those k pixels only.
- label present: soft Dice loss (``1 - (2 sum p t + s) / (sum p + sum t + s)``, p = sigmoid) plus BCE
  averaged over the pixels still right (SEA's masked BCE), the damage a segmentation attack does.

The per-image loss is the mean over labels; like every attack loss it is reduced per image, so a batch is
attacked as its images one by one. Written for sigmoid (multi-label) logits (N, L, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Pixels pushed over the threshold per absent label: one predicted pixel already zeroes the label's DSC;
# 16 (a 4 x 4 patch) keeps the push alive where the single top pixel saturates or sits at a border.
TOP_K = 16
DICE_SMOOTH = 1e-5  # MONAI's DiceLoss default smoothing (numerator and denominator)


def hallucinate_loss(logits: torch.Tensor, target: torch.Tensor, top_k: int = TOP_K) -> torch.Tensor:
    """The loss of each image, (N,), for logits and 0/1 targets (N, L, H, W) (see the module doc)."""
    truth = (target > 0.5).flatten(2)
    flat = logits.flatten(2)
    absent = ~truth.any(dim=2)
    top = flat.topk(min(int(top_k), flat.shape[2]), dim=2).values
    absent_term = F.logsigmoid(top).mean(dim=2)
    target_flat = truth.to(flat.dtype)
    p = torch.sigmoid(flat)
    dice = 1 - (2 * (p * target_flat).sum(2) + DICE_SMOOTH) / (p.sum(2) + target_flat.sum(2) + DICE_SMOOTH)
    correct = ((flat.detach() > 0) == truth).to(flat.dtype)
    masked_bce = (correct * F.binary_cross_entropy_with_logits(flat, target_flat, reduction="none")).mean(dim=2)
    return torch.where(absent, absent_term, dice + masked_bce).mean(dim=1)
