"""Adversarial training, the defences ``core.training`` offers: FGSM with a random start ("fast
adversarial training", Wong et al., ICLR 2020) and PGD-K (Madry et al., 2018), the eps ramp of the first
epochs, and the per-epoch check for catastrophic overfitting.

Both defences are ``core.attacks.iterative.pgd``: FGSM-RS is one step of 1.25 eps from a uniform random start in
the eps ball (Wong et al.'s alpha), PGD-K is K steps of 2.5 eps / K (Madry et al.). The attack's passes
run in eval mode, as every attack in ``core.attacks`` does: they attack the model as it is deployed (and
as ``segadv robust`` attacks it), a slice's perturbation does not depend on the other slices of its batch,
and batch norm's running statistics are not touched. The perturbation comes from the per-image attack
loss (default ``focal+dice``, the training loss's form) against the batch's masks; autograd takes the
gradient with respect to the input only, so no parameter gradient builds up before the training step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from core.errors import OptionError, check_choice
from core.losses import check_loss
from core.names import ADV_METHODS

FGSM_RS_STEP = 1.25  # Wong et al.: larger steps than 1.25 eps made fast training collapse more often
DEFAULT_PGD_STEPS = 3
# The catastrophic-overfitting check: a few fixed validation slices, FGSM against a short PGD, each epoch.
CHECK_SLICES = 8
CHECK_PGD_STEPS = 5
# PGD robust DSC below this share of its best earlier value counts as a collapse ...
COLLAPSE_SHARE = 0.5
# ... when FGSM robust DSC kept at least this share of its value at that epoch: the signature of
# catastrophic overfitting (the model learnt to defeat the single step, not the attack).
FGSM_KEPT_SHARE = 0.8


@dataclass(frozen=True)
class Defence:
    """One adversarial-training recipe; ``as_meta()`` is what checkpoints record under ``defence``."""

    method: str
    eps: float
    steps: int
    step_size: float
    loss: str
    ratio: float  # the share of each batch replaced by its adversarial version
    warmup_epochs: float  # eps ramps linearly from 0 to ``eps`` over these epochs

    def eps_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """The eps of 0-based ``step`` of 0-based ``epoch``: a function of the position alone, so a resumed
        run goes on with the ramp where the interrupted one stopped."""
        ramp_steps = self.warmup_epochs * steps_per_epoch
        if ramp_steps <= 0:
            return self.eps
        return self.eps * min(1.0, (epoch * steps_per_epoch + step + 1) / ramp_steps)

    def full_eps_from(self, epoch: int) -> bool:
        """Whether an epoch ending after ``epoch`` epochs trained its last step at the full eps."""
        return epoch >= self.warmup_epochs

    def adversarial_count(self, batch: int) -> int:
        """How many of a batch's images are replaced: the ratio rounded half up, at least one."""
        return min(batch, max(1, math.floor(self.ratio * batch + 0.5)))

    def as_meta(self) -> dict:
        return asdict(self)


def make_defence(
    method: str | None,
    eps: float | None,
    *,
    steps: int | None = None,
    loss: str = "focal+dice",
    ratio: float = 1.0,
    warmup_epochs: float = 0.0,
) -> Defence | None:
    """The ``Defence`` for ``--adv`` and its options (None: plain training), or an ``OptionError`` naming
    the value that does not fit."""
    if method is None:
        given = [name for name, value in (("--adv-eps", eps), ("--adv-steps", steps)) if value is not None]
        if given:
            raise OptionError(
                f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --adv ({' or '.join(ADV_METHODS)})"
            )
        return None
    check_choice(method, ADV_METHODS, "adversarial training method")
    if eps is None:
        raise OptionError(f"--adv {method} needs --adv-eps (the L-inf radius, images in [0, 1]; e.g. 0.009)")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0 < eps <= 1):
        raise OptionError(f"--adv-eps must be in (0, 1], got {eps}")
    if method == "fgsm-rs":
        if steps not in (None, 1):
            raise OptionError(f"--adv fgsm-rs takes one step; --adv-steps {steps} needs --adv pgd")
        steps, step_size = 1, FGSM_RS_STEP * eps
    else:
        steps = DEFAULT_PGD_STEPS if steps is None else steps
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise OptionError(f"--adv-steps must be a whole number of at least 1, got {steps}")
        steps = int(steps)
        step_size = 2.5 * eps / steps
    check_loss(loss)
    if not (math.isfinite(ratio) and 0 < ratio <= 1):
        raise OptionError(f"--adv-ratio must be in (0, 1], got {ratio}")
    if not (math.isfinite(warmup_epochs) and warmup_epochs >= 0):
        raise OptionError(f"--adv-warmup must be a number of epochs >= 0, got {warmup_epochs}")
    return Defence(
        method=method,
        eps=float(eps),
        steps=steps,
        step_size=float(step_size),
        loss=loss,
        ratio=float(ratio),
        warmup_epochs=float(warmup_epochs),
    )


def adversarial_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    defence: Defence,
    eps: float,
    *,
    generator: torch.Generator,
    precision: str = "fp32",
) -> torch.Tensor:
    """``images`` with the first ``defence.adversarial_count`` of them replaced by their adversarial
    version at ``eps`` (the batch order is random already). ``model`` is the bare module (not a DDP
    wrapper): the attack's passes are no part of the gradient DDP synchronises."""
    from core.attacks.iterative import pgd

    count = defence.adversarial_count(images.shape[0])
    attacked = pgd(
        model,
        images[:count],
        masks[:count],
        eps,
        steps=defence.steps,
        step_size=defence.step_size * (eps / defence.eps),
        loss=defence.loss,
        random_start=True,
        generator=generator,
        precision=precision,
    )
    if count == images.shape[0]:
        return attacked
    return torch.cat([attacked, images[count:]])


@dataclass(frozen=True)
class OverfittingCheck:
    """One epoch's check on the fixed validation slices: mean DSC clean, under FGSM and under a short PGD,
    all at the defence's full eps; ``collapsed`` when PGD fell while FGSM held (see ``check_overfitting``)."""

    eps: float
    slices: int
    pgd_steps: int
    clean_dsc: float
    fgsm_dsc: float
    pgd_dsc: float
    collapsed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def robust_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    eps: float,
    *,
    loss: str,
    seed: int,
    precision: str = "fp32",
) -> tuple[float, float, float]:
    """Mean DSC (per organ and slice, an organ empty in both counts 1) clean, under FGSM and under PGD-5."""
    from core.attacks.fast_gradient import fgsm
    from core.attacks.iterative import pgd
    from core.metrics import dice_per_organ
    from core.models.inference import masks_from_logits, output_kind, safe_logits

    def mean_dsc(batch: torch.Tensor) -> float:
        with torch.no_grad():
            predicted = masks_from_logits(safe_logits(model, batch, precision), output_kind(model))
        return float(np.mean(dice_per_organ(predicted, masks > 0.5, empty="one")))

    generator = torch.Generator(device=images.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        clean = mean_dsc(images)
        fgsm_dsc = mean_dsc(fgsm(model, images, masks, eps, loss=loss, precision=precision))
        pgd_dsc = mean_dsc(
            pgd(model, images, masks, eps, steps=CHECK_PGD_STEPS, loss=loss, generator=generator, precision=precision)
        )
    finally:
        model.train(was_training)
    return clean, fgsm_dsc, pgd_dsc


def check_overfitting(
    clean: float, fgsm_dsc: float, pgd_dsc: float, earlier: list[dict], *, eps: float, slices: int
) -> OverfittingCheck:
    """Catastrophic overfitting (Wong et al.): PGD robust DSC collapses to under half of its best earlier
    value while FGSM robust DSC stays where it was at that epoch. ``earlier``: the earlier epochs' checks
    (``OverfittingCheck.as_dict()``)."""
    collapsed = False
    if earlier:
        best = max(earlier, key=lambda entry: entry["pgd_dsc"])
        collapsed = pgd_dsc < COLLAPSE_SHARE * best["pgd_dsc"] and fgsm_dsc >= FGSM_KEPT_SHARE * best["fgsm_dsc"]
    return OverfittingCheck(
        eps=eps,
        slices=slices,
        pgd_steps=CHECK_PGD_STEPS,
        clean_dsc=clean,
        fgsm_dsc=fgsm_dsc,
        pgd_dsc=pgd_dsc,
        collapsed=collapsed,
    )


def check_batch(loader, device: torch.device, slices: int = CHECK_SLICES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``slices`` validation slices (images, masks), the same every epoch."""
    images, masks, taken = [], [], 0
    for batch_images, batch_masks in loader:
        images.append(batch_images[: slices - taken])
        masks.append(batch_masks[: slices - taken])
        taken += images[-1].shape[0]
        if taken >= slices:
            break
    return torch.cat(images).to(device), torch.cat(masks).to(device)
