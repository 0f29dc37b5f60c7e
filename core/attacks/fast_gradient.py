"""FGSM (textbook and the paper's variant) from a gradient sign, and the batched adversarial forward
passes that turn one gradient into any number of eps values (``core.evaluation.scoring.sweep``).

- ``textbook``: ``x_adv = clip01(x + eps * sign(grad_x L(f(x), y)))`` (Goodfellow et al.).
- ``paper``: what the paper's notebook computed, ``clip01((1 - eps) * x + eps * sign(grad_x L(y, f(x))))``
  with the loss called as ``loss(mask, logits)``; its realised L-inf can reach 2 eps, so results always
  report it. The adversarial input is (N, 3, H, W) in that mode (``core.attacks.gradients``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.attacks.batch import check_batch_shape
from core.attacks.config import AttackConfig, check_eps
from core.attacks.fast_gradient_l2 import run_fgm_l2
from core.attacks.gradient_cache import cached_gradient
from core.attacks.gradients import check_mode, input_gradients
from core.attacks.runner import AttackContext, AttackOutput
from core.models.inference import eval_mode, masks_from_logits, output_kind, safe_logits


def apply_sign(image: torch.Tensor, sign: torch.Tensor, eps, mode: str = "textbook") -> torch.Tensor:
    """The FGSM step for a known gradient sign; ``eps`` a number or a tensor broadcastable to ``image``.
    A 3-channel sign (the paper's mode) on a 1-channel image gives the 3-channel adversarial input.

    Both the plain and the cached path come through here, so their results agree bit for bit.
    """
    check_mode(mode)
    eps_t = torch.as_tensor(eps, dtype=image.dtype, device=image.device)
    step = eps_t * sign.to(image.dtype)
    if mode == "paper":
        return ((1 - eps_t) * image + step).clamp(0.0, 1.0)
    return (image + step).clamp(0.0, 1.0)


def fgsm(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    loss: str = "bce",
    mode: str = "textbook",
    *,
    precision: str = "fp32",
) -> torch.Tensor:
    """Fast gradient sign method, untargeted (raises the loss against ``target``); see the module doc."""
    eps = check_eps(eps)
    sign = input_gradients(model, image, target, (loss,), mode, precision=precision)[loss].sign
    return apply_sign(image.detach(), sign, eps, mode)


def default_chunk_size(device: torch.device) -> int:
    """Images per no-grad forward pass in a sweep. On CPU big batches are slower per image once the
    activations leave the caches (small model at 128 x 128: ~47 ms per image at 4 to 8 images, ~100 ms
    at 40); a GPU wants big batches."""
    return 128 if device.type == "cuda" else 8


def adversarial_predictions(
    model: torch.nn.Module,
    image: torch.Tensor,
    sign: torch.Tensor,
    eps_values: Sequence[float],
    mode: str = "textbook",
    *,
    chunk_size: int | None = None,
    precision: str = "fp32",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(adversarial image, predicted masks) for every eps, from a known sign: the k * N adversarial
    images go through the model, without autograd, in batches of at most ``chunk_size`` images (whole
    eps groups of N where N fits; a larger N is split). Default: ``default_chunk_size``."""
    check_batch_shape(image)
    n = image.shape[0]
    eps_values = [check_eps(eps) for eps in eps_values]
    if chunk_size is None:
        chunk_size = default_chunk_size(image.device)
    chunk_size = max(1, int(chunk_size))
    clean = image.detach()
    kind = output_kind(model)
    results: list = []
    with eval_mode(model), torch.no_grad():
        if n <= chunk_size:
            per_chunk = chunk_size // max(n, 1)
            for start in range(0, len(eps_values), per_chunk):
                group = eps_values[start : start + per_chunk]
                eps_t = torch.tensor(group, dtype=clean.dtype, device=clean.device).view(-1, 1, 1, 1, 1)
                adversarial = apply_sign(clean.unsqueeze(0), sign.unsqueeze(0), eps_t, mode)
                logits = safe_logits(model, adversarial.flatten(0, 1), precision)
                predicted = masks_from_logits(logits, kind).unflatten(0, (len(group), n))
                results.extend(zip(adversarial.unbind(0), predicted.unbind(0)))
            return results
        for eps in eps_values:  # one eps group is already more than a chunk: split it
            adversarial = apply_sign(clean, sign, eps, mode)
            predicted = torch.cat(
                [
                    masks_from_logits(safe_logits(model, adversarial[start : start + chunk_size], precision), kind)
                    for start in range(0, n, chunk_size)
                ]
            )
            results.append((adversarial, predicted))
    return results


def run_fgsm(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """FGSM from the (cached) gradient; its clean prediction comes from the gradient's own forward pass,
    and the adversarial prediction from one more forward pass (none when ``context.predict_result`` is off).
    Under ``norm="l2"``: the L2 fast gradient method (``core.attacks.fast_gradient_l2``)."""
    if config.norm == "l2":
        return run_fgm_l2(model, image, target, config, context)
    entry = cached_gradient(
        model,
        image,
        target,
        config.loss,
        config.mode,
        cache=context.cache,
        cache_key=context.cache_key,
        precision=config.precision,
    )
    if not context.predict_result:
        return AttackOutput(
            apply_sign(image.detach(), entry.sign, config.eps, config.mode),
            entry.clean_pred,
            zero_grad_fraction=entry.zero_fraction,
        )
    adversarial, adv_pred = adversarial_predictions(
        model, image, entry.sign, [config.eps], config.mode, precision=config.precision
    )[0]
    return AttackOutput(adversarial, entry.clean_pred, adv_pred, entry.zero_fraction)
