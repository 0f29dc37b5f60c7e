"""The ``hallucinate`` attack loss: aimed at how DSC scores labels absent from the truth.

A label absent from a slice's truth scores DSC 1 until a single pixel of it is predicted, and 0 after; on
the demo's test slices nearly half of the (slice, label) pairs are absent. So per image and label:

- label absent from the target: the mean of ``log sigmoid(m)`` over the ``TOP_K`` largest margins m of the
  label, m > 0 where the label is predicted. An attack raises it, which pushes the pixels nearest to being
  predicted over the line (the fewest needed for a DSC of 0); its gradient ``sigmoid(-m)`` is near 1 far
  below the line and fades once they are well over it (the BCE against the truth, ``softplus(m)``, would
  instead vanish far below). The gradient reaches those k pixels only.
- label present: soft Dice loss (``1 - (2 sum p t + s) / (sum p + sum t + s)``, p the label's probability)
  plus the label's binary cross-entropy averaged over the pixels still right for it (SEA's masked CE), the
  damage a segmentation attack does.

The per-image loss is the mean over labels; like every attack loss it is reduced per image, so a batch is
attacked as its images one by one. The two output kinds (``core.labels``):

- sigmoid (multi-label) logits (N, L, H, W): m is the label's logit z, p = sigmoid(z);
- softmax logits (N, L + 1, H, W), background first: m is the label's logit less the largest other class's
  (the label wins the argmax where m > 0), p its softmax probability, and the label's binary cross-entropy
  is ``-log p`` on its truth pixels and ``-log(1 - p)`` elsewhere; a pixel is still right for the label when
  "argmax is the label" agrees with the truth. With one label this is the sigmoid form of the logit
  difference z_1 - z_0 (softmax over two classes is the sigmoid of their difference), so both kinds aim at
  the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Pixels pushed over the line per absent label: one predicted pixel already zeroes the label's DSC; 16 (a
# 4 x 4 patch) keeps the push alive where the single top pixel saturates or sits at a border.
TOP_K = 16
DICE_SMOOTH = 1e-5  # MONAI's DiceLoss default smoothing (numerator and denominator)


def hallucinate_loss(logits: torch.Tensor, target: torch.Tensor, top_k: int = TOP_K) -> torch.Tensor:
    """The loss of each image, (N,), for sigmoid logits and 0/1 targets (N, L, H, W) (see the module doc)."""
    flat = logits.flatten(2)
    truth = (target > 0.5).flatten(2)
    target_flat = truth.to(flat.dtype)
    bce = F.binary_cross_entropy_with_logits(flat, target_flat, reduction="none")
    return _combine(flat, torch.sigmoid(flat), truth, (flat.detach() > 0) == truth, bce, top_k)


def hallucinate_softmax_loss(logits: torch.Tensor, target: torch.Tensor, top_k: int = TOP_K) -> torch.Tensor:
    """The loss of each image, (N,), for softmax logits (N, L + 1, H, W), background first, and 0/1 target
    masks (N, L, H, W) (see the module doc)."""
    labels = logits.shape[1] - 1
    best_two = logits.topk(2, dim=1)
    channel = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
    # The largest logit of the classes other than each channel: the runner-up where the channel is the argmax.
    best_other = torch.where(best_two.indices[:, :1] == channel, best_two.values[:, 1:2], best_two.values[:, :1])
    margin = (logits - best_other)[:, 1:].flatten(2)
    log_p = F.log_softmax(logits, dim=1)[:, 1:].flatten(2)
    # log(1 - p) of each label as the log-sum-exp of the other classes, finite where p rounds to 1.
    others = torch.eye(labels + 1, dtype=torch.bool, device=logits.device)[1:].view(1, labels, labels + 1, 1, 1)
    log_rest = logits.unsqueeze(1).masked_fill(others, float("-inf")).logsumexp(2).flatten(2)
    log_not_p = log_rest - logits.logsumexp(1).flatten(1).unsqueeze(1)
    truth = (target > 0.5).flatten(2)
    bce = -torch.where(truth, log_p, log_not_p)
    return _combine(margin, log_p.exp(), truth, (margin.detach() > 0) == truth, bce, top_k)


def _combine(
    margin: torch.Tensor,
    p: torch.Tensor,
    truth: torch.Tensor,
    correct: torch.Tensor,
    bce: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """Both kinds' loss from their (N, L, HW) margins, label probabilities, truth, still-right pixels and
    per-pixel binary cross-entropy."""
    absent = ~truth.any(dim=2)
    top = margin.topk(min(int(top_k), margin.shape[2]), dim=2).values
    absent_term = F.logsigmoid(top).mean(dim=2)
    t = truth.to(p.dtype)
    dice = 1 - (2 * (p * t).sum(2) + DICE_SMOOTH) / (p.sum(2) + t.sum(2) + DICE_SMOOTH)
    masked_bce = (correct.to(bce.dtype) * bce).mean(dim=2)
    return torch.where(absent, absent_term, dice + masked_bce).mean(dim=1)
