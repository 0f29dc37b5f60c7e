"""The fast gradient method in L2 (Goodfellow et al.'s FGM; FGSM's L2 form): one step of L2 length eps along
the input gradient, ``x_adv = clip01(x + eps * g / ||g||_2)`` per slice (``core.attacks.norms``).

Unlike FGSM it needs the gradient itself, not its sign, so it does not go through the sign cache; clipping
to [0, 1] only shortens the step, so the realised L2 is at most eps (equal where no pixel is clipped).
"""

from __future__ import annotations

import torch

from core.attacks.batch import check_batch_shape
from core.attacks.config import AttackConfig, check_eps
from core.attacks.gradients import loss_and_gradient
from core.attacks.norms import steepest_step
from core.attacks.runner import AttackContext, AttackOutput, clean_prediction
from core.losses import check_loss, per_image_loss
from core.models.inference import eval_mode, predict, reference_math


def l2_gradient_step(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    loss: str = "bce",
    *,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial batch, share of pixels whose gradient is exactly 0 per slice (N,)) of one L2 step of
    length ``eps`` raising ``loss`` against ``target``."""
    check_batch_shape(image, target)
    check_loss(loss)
    eps = check_eps(eps, "l2")
    target = target.detach()
    with eval_mode(model), reference_math(image.device, precision):
        _, grad, _ = loss_and_gradient(
            model, image, lambda logits, _step: per_image_loss(loss, logits, target), 1, precision
        )
    zero = (grad == 0).flatten(1).double().mean(dim=1)
    return (image.detach() + eps * steepest_step(grad, "l2")).clamp(0.0, 1.0), zero


def fgm_l2(model, image, target, eps: float, loss: str = "bce", *, precision: str = "fp32") -> torch.Tensor:
    """The L2 fast gradient method's adversarial batch (see the module doc)."""
    return l2_gradient_step(model, image, target, eps, loss, precision=precision)[0]


def run_fgm_l2(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """The registry's FGSM under ``norm="l2"``: one L2 gradient step, against ``target`` (None: the clean
    prediction), scored with one more forward pass unless ``context.predict_result`` is off."""
    clean_pred = clean_prediction(model, image, config, context)
    objective_target = clean_pred.float() if target is None else target
    adversarial, zero = l2_gradient_step(
        model, image, objective_target, config.eps, config.loss, precision=config.precision
    )
    adv_pred = predict(model, adversarial, config.precision) if context.predict_result else None
    return AttackOutput(adversarial, clean_pred, adv_pred, zero.cpu().numpy())
