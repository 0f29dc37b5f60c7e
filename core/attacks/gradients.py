"""Input gradients for attacks: sign(grad_x L) for several losses from one forward pass, FGSM's two modes
(``textbook``, and the paper's notebook: ``loss(mask, logits)`` on the slice copied to 3 channels), fp16
loss scaling, and the loss-and-gradient pass of an iterative step.

Gradients are taken with ``torch.autograd.grad`` with respect to the input only, so parameters never get
a ``.grad`` and ``requires_grad`` is never toggled; every loss is reduced per image (``core.losses``), so
a batch is attacked exactly as its images one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.attacks.batch import check_batch_shape
from core.errors import OptionError, check_choice
from core.losses import check_loss, per_image_loss
from core.models.inference import eval_mode, masks_from_logits, output_kind, precision_autocast, reference_math
from core.names import MODES


def check_mode(mode: str) -> str:
    return check_choice(mode, MODES, "FGSM mode")


def check_paper_mode(model: torch.nn.Module) -> None:
    """The paper's FGSM swaps the loss's arguments (mask and logits, the same shape only for sigmoid) and
    feeds the slice copied to 3 channels: an ``OptionError`` for a model where that has no meaning."""
    if output_kind(model) != "sigmoid":
        raise OptionError("mode 'paper': the paper's swapped-argument FGSM is defined for sigmoid models; use textbook")
    network = getattr(model, "module", model)
    spec = getattr(network, "spec", None)
    # A cached (traced) model has no spec, only its input channels.
    channels = spec.in_channels if spec is not None else getattr(network, "in_channels", 3)
    if channels != 3:
        name = f"model {spec.name!r}" if spec is not None else "the model"
        raise OptionError(f"mode 'paper' feeds the slice copied to 3 channels; {name} takes one")


def _attack_loss(name: str, logits: torch.Tensor, target: torch.Tensor, mode: str, kind: str) -> torch.Tensor:
    if mode == "paper":
        # Literally the notebook's call, loss(mask, logits): arguments swapped on purpose.
        return per_image_loss(name, target.to(logits.dtype), logits)
    return per_image_loss(name, logits, target, kind=kind)


@dataclass
class GradientEntry:
    """What one backward pass yields for a batch, and what ``GradientCache`` keeps.

    sign: int8 (N, 1, H, W) in {-1, 0, 1}, (N, 3, H, W) in the paper's mode; clean_pred: bool (N, L, H, W), the
    prediction on the clean
    image (from the same forward pass); zero_fraction: float64 (N,), the share of pixels whose gradient
    is exactly 0 (sign 0: FGSM leaves them unchanged; in fp16 without loss scaling this is most of them).
    """

    sign: torch.Tensor
    clean_pred: torch.Tensor
    zero_fraction: np.ndarray


def input_gradients(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor | None,
    losses: Sequence[str] = ("bce",),
    mode: str = "textbook",
    *,
    precision: str = "fp32",
) -> dict[str, GradientEntry]:
    """sign(grad_x loss) for each loss from ONE forward pass, one backward per loss.

    ``target=None`` attacks the model's own clean prediction, taken from that same forward pass.

    ``precision`` "bf16" / "fp16" runs the forward under autocast (for CUDA; fp32 is the reference).
    With fp16 the gradient entering the model is rescaled per image (sign is invariant to a positive
    scale) so the small input gradients do not underflow to zero; if fp16 still gives non-finite
    gradients the batch is recomputed in fp32.
    """
    check_batch_shape(image, target)
    losses = [check_loss(name) for name in losses]
    if not losses:
        raise ValueError("at least one loss is needed")
    check_mode(mode)
    if mode == "paper":
        check_paper_mode(model)
    with reference_math(image.device, precision):
        entries = _input_gradients(model, image, target, losses, mode, precision)
    if entries is None:  # fp16 overflow
        with reference_math(image.device, "fp32"):
            entries = _input_gradients(model, image, target, losses, mode, "fp32")
    return entries


def _input_gradients(model, image, target, losses, mode, precision):
    # The paper's notebook fed the slice copied to 3 channels and took each channel's own gradient.
    x = (image.detach().repeat(1, 3, 1, 1) if mode == "paper" else image.detach().clone()).requires_grad_(True)
    if target is not None:
        target = target.detach()
    kind = output_kind(model)
    with eval_mode(model), torch.enable_grad():
        with precision_autocast(image.device, precision):
            logits = model(x)
        logits = logits.float()
        clean_pred = masks_from_logits(logits.detach(), kind)
        if target is None:
            target = clean_pred
        entries = {}
        for index, name in enumerate(losses):
            loss = _attack_loss(name, logits, target, mode, kind).sum()
            grad = _input_gradient(loss, logits, x, precision, retain_graph=index < len(losses) - 1)
            if grad is None:
                return None
            sign = grad.sign().to(torch.int8)
            zero_fraction = (sign == 0).flatten(1).float().mean(dim=1).cpu().double().numpy()
            entries[name] = GradientEntry(sign=sign, clean_pred=clean_pred, zero_fraction=zero_fraction)
    return entries


def _input_gradient(loss, logits, x, precision, *, retain_graph=False):
    """d loss / d x; None when an fp16 pass gave non-finite gradients (the caller redoes it in fp32).

    In fp16, d loss / d logits is taken in fp32 and rescaled per image to a peak of 1 before it enters the
    fp16 graph: no underflow (nor overflow) on the way back, and the sign, all an L-inf attack uses, is
    unchanged."""
    if precision != "fp16":
        (grad,) = torch.autograd.grad(loss, x, retain_graph=retain_graph)
        return grad
    (grad_logits,) = torch.autograd.grad(loss, logits, retain_graph=True)
    peak = grad_logits.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    scale = peak.view(-1, *([1] * (grad_logits.ndim - 1)))
    (grad,) = torch.autograd.grad(logits, x, grad_outputs=grad_logits / scale, retain_graph=retain_graph)
    return grad if torch.isfinite(grad).all() else None


def gradient_sign(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    loss: str = "bce",
    mode: str = "textbook",
    *,
    precision: str = "fp32",
) -> torch.Tensor:
    """sign(grad_x L) as used by FGSM in ``mode``, same shape and dtype as ``image``."""
    entry = input_gradients(model, image, target, (loss,), mode, precision=precision)[loss]
    return entry.sign.to(image.dtype)


def loss_and_gradient(model, x, objective, step: int, precision: str = "fp32", *, need_grad: bool = True):
    """(objective per image (N,), d sum(objective) / dx or None, fp32 logits) at ``x``, all detached:
    one forward (and backward) pass of an iterative attack. ``objective(logits, step)`` -> (N,), ``step``
    1-based. An fp16 pass that overflows is redone in fp32; without ``need_grad`` only the forward runs."""
    x = x.detach().requires_grad_(need_grad)
    with torch.enable_grad() if need_grad else torch.no_grad():
        for attempt in dict.fromkeys((precision, "fp32")):
            with precision_autocast(x.device, attempt):
                logits = model(x)
            logits = logits.float()
            if not need_grad:
                if attempt == "fp32" or torch.isfinite(logits).all():
                    return objective(logits, step).detach(), None, logits
                continue
            values = objective(logits, step)
            grad = _input_gradient(values.sum(), logits, x, attempt)
            if grad is not None:
                return values.detach(), grad, logits.detach()
    raise AssertionError("unreachable: the fp32 pass always returns")
