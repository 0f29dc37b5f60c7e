"""Attack and training losses on label logits, reduced per image, for both output kinds (``core.labels``).

Every loss takes logits (N, C, H, W) and 0/1 target masks (N, L, H, W), one channel per foreground label
(C = L for sigmoid, L + 1 for softmax), and returns one value per image, shape (N,), so that attacking a batch gives
exactly the gradient of attacking each image alone
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

Softmax models (``kind="softmax"``) get the same names in their original multi-class forms: the target
masks become a class map (0, the background, where no label is set, else 1 + the label's index), p is the
softmax over the C channels and p_t the probability of the pixel's true class:

- ``bce``: cross-entropy, -log p_t, averaged over the pixels;
- ``focal``: -(1 - p_t)^2 log p_t (MONAI's ``FocalLoss(use_softmax=True)``, summed over the classes, of
  which only the true one is non-zero), averaged over the pixels;
- ``dice``: MONAI's ``DiceLoss(softmax=True)`` against the one-hot class map, background included (as
  ``to_onehot_y=True`` with the default ``include_background``), averaged over the C channels;
- ``focal+dice``: the two added (not MONAI's ``DiceFocalLoss(softmax=True)``, whose focal term is the
  sigmoid one);
- ``masked-bce``: SEA's masked CE: the CE of the pixels still predicted right (argmax = true class),
  averaged over all pixels;
- ``balanced-bce``: SEA's balanced masked CE: the same averaged within each true class, then over the
  classes present in the image;
- ``cos-bce``: CosPGD: the CE weighted by the (detached) cosine between p and the one-hot target,
  p_t / ||p||_2;
- ``seg-bce``: SegPGD: the CE of right pixels weighted 1 - lambda_t, of wrong ones lambda_t;
- ``js``: the Jensen-Shannon divergence between p and the one-hot target, which depends on p_t alone:
  log 2 + (p_t log p_t - (1 + p_t) log(1 + p_t)) / 2, in [0, log 2];
- ``hallucinate``: absent labels get their top-k margins over the best other class pushed up (to win the
  argmax), present ones soft Dice of their softmax probability plus their masked binary CE
  (``core.hallucination``).

The names (and ``LOSS_TITLES``) are the sigmoid forms'; a softmax model's results say which kind it is.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F

from core.errors import SegadvError
from core.hallucination import hallucinate_loss, hallucinate_softmax_loss
from core.names import LOSS_NAMES, LOSS_TITLES, PAPER_LOSS_NAMES  # noqa: F401  (re-exported)

FOCAL_GAMMA = 2.0
SEGMENTATION_LOSSES = tuple(name for name in LOSS_NAMES if name not in PAPER_LOSS_NAMES + ("hallucinate",))


@cache
def _monai_softmax_loss(name: str) -> torch.nn.Module:
    """MONAI's softmax focal or Dice module, per element (no reduction), for one-hot targets."""
    from monai.losses import DiceLoss, FocalLoss

    if name == "focal":
        return FocalLoss(gamma=FOCAL_GAMMA, use_softmax=True, reduction="none")
    return DiceLoss(softmax=True, reduction="none")


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
    name: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    schedule: tuple[int, int] = (1, 1),
    kind: str = "sigmoid",
) -> torch.Tensor:
    """Loss ``name`` of each image in the batch, shape (N,).

    ``logits`` and ``target`` must have the same shape (N, C, H, W). The paper's notebook called these
    losses with the arguments swapped (mask first); that is done by the caller, see
    ``core.attacks`` mode ``"paper"``, and works here because every loss accepts real-valued targets
    (the segmentation losses read them as masks, ``target > 0.5``). ``schedule`` is (iteration t,
    iterations T) of the attack, read only by ``seg-bce``.

    ``kind="softmax"``: ``logits`` (N, L + 1, H, W), background first, and target masks (N, L, H, W); see
    the module doc.
    """
    check_loss(name)
    if kind == "softmax":
        return _softmax_loss(name, logits, target, schedule)
    if kind != "sigmoid":
        raise ValueError(f"unknown output kind {kind!r}; expected sigmoid or softmax")
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
    lam = _seg_lambda(schedule)
    return _mean_per_image(((1 - lam) * correct + lam * (1 - correct)) * bce)


def _seg_lambda(schedule: tuple[int, int]) -> float:
    """SegPGD's lambda_t = (t - 1) / (2 T) at iteration t of T."""
    step, steps = schedule
    if not (1 <= step and 1 <= steps):
        raise ValueError(f"seg-bce needs iteration t >= 1 of T >= 1, got {schedule}")
    return (step - 1) / (2 * steps)


# --- softmax (multi-class) forms ------------------------------------------------------------------


def class_map(target: torch.Tensor) -> torch.Tensor:
    """(N, L, H, W) masks -> (N, H, W) long classes: 0 where no label is set, else 1 + the first label set
    (a softmax model's masks never overlap)."""
    truth = target > 0.5
    return torch.where(truth.any(dim=1), truth.to(torch.uint8).argmax(dim=1) + 1, 0)


def _softmax_loss(name: str, logits: torch.Tensor, target: torch.Tensor, schedule: tuple[int, int]) -> torch.Tensor:
    if logits.ndim != 4 or target.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) logits and masks, got {tuple(logits.shape)} and {tuple(target.shape)}")
    n, channels, height, width = logits.shape
    if target.shape != (n, channels - 1, height, width):
        raise ValueError(
            f"softmax logits {tuple(logits.shape)} need target masks of shape {(n, channels - 1, height, width)} "
            f"(one channel per label, no background), got {tuple(target.shape)}"
        )
    if name == "hallucinate":
        return hallucinate_softmax_loss(logits, target)
    classes = class_map(target)
    if name in ("focal", "dice", "focal+dice"):
        onehot = F.one_hot(classes, channels).permute(0, 3, 1, 2).to(logits.dtype)
        total = torch.zeros(n, dtype=logits.dtype, device=logits.device)
        if name != "dice":  # the focal term: only the true class's entry is non-zero, so the sum over classes
            total = total + _monai_softmax_loss("focal")(logits, onehot).sum(dim=1).flatten(1).mean(dim=1)
        if name != "focal":
            total = total + _mean_per_image(_monai_softmax_loss("dice")(logits, onehot))
        return total
    ce = F.cross_entropy(logits, classes, reduction="none")  # (N, H, W)
    if name == "bce":
        return _mean_per_image(ce)
    correct = (logits.detach().argmax(dim=1) == classes).to(logits.dtype)
    if name == "js":
        # p_t log p_t from log_softmax, so it stays finite when p_t underflows.
        log_p_true = F.log_softmax(logits, dim=1).gather(1, classes.unsqueeze(1)).squeeze(1)
        p_true = log_p_true.exp()
        return _mean_per_image(math.log(2.0) + 0.5 * (p_true * log_p_true - (1 + p_true) * torch.log1p(p_true)))
    if name == "masked-bce":
        return _mean_per_image(correct * ce)
    if name == "balanced-bce":
        return _class_balanced_mean(correct * ce, classes, channels)
    if name == "cos-bce":
        p = F.softmax(logits.detach(), dim=1)
        cosine = p.gather(1, classes.unsqueeze(1)).squeeze(1) / p.norm(dim=1)
        return _mean_per_image(cosine * ce)
    lam = _seg_lambda(schedule)
    return _mean_per_image(((1 - lam) * correct + lam * (1 - correct)) * ce)


def _class_balanced_mean(values: torch.Tensor, classes: torch.Tensor, channels: int) -> torch.Tensor:
    """Per image: the mean of ``values`` (N, H, W) within each true class, averaged over the classes present."""
    members = F.one_hot(classes, channels).flatten(1, 2).to(values.dtype)  # (N, HW, C)
    count = members.sum(dim=1)
    means = (values.flatten(1).unsqueeze(2) * members).sum(dim=1) / count.clamp(min=1)
    present = count > 0
    return (means * present).sum(dim=1) / present.sum(dim=1)


class SoftmaxDiceFocalLoss(torch.nn.Module):
    """The training loss of softmax models, the softmax form of the paper's Dice + Focal (gamma 2): MONAI's
    ``DiceLoss(softmax=True)`` (per slice, or pooled over the batch with ``batch``) plus the softmax focal
    term, on logits (N, L + 1, H, W) and masks (N, L, H, W), averaged over the batch. Without ``batch`` it
    is the mean of ``per_image_loss("focal+dice", ..., kind="softmax")``."""

    def __init__(self, batch: bool = False):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(softmax=True, batch=batch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = class_map(target)
        onehot = F.one_hot(classes, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        focal = _monai_softmax_loss("focal")(logits, onehot).sum(dim=1).mean()
        return self.dice(logits, onehot) + focal
