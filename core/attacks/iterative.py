"""Iterative attacks (textbook formulation): BIM, PGD and the targeted "erase organs" attack, their
registry runners, and the best iterate (``BestIterate``): per slice the point whose prediction has the
lowest mean DSC against the scoring reference, from the forward passes the attack makes anyway.

Random starts are drawn per slice from a seed derived from the slice id (``random_start_point``), so a
slice starts from the same point whatever batch, process or device it is attacked in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.attacks.batch import broadcast_per_image, check_batch_shape, model_labels
from core.attacks.config import AttackConfig, check_eps
from core.attacks.control import StepCallback, StopCheck, check_stop
from core.attacks.gradients import loss_and_gradient
from core.attacks.norms import project, steepest_step, uniform_in_l2_ball
from core.attacks.runner import AttackContext, AttackOutput, clean_prediction, scoring_reference
from core.errors import OptionError
from core.labels import LabelSet
from core.losses import check_loss, per_image_loss
from core.models.inference import eval_mode, masks_from_logits, output_kind, reference_math


def default_step_size(eps: float, steps: int) -> float:
    """2.5 eps / steps (Madry et al.): enough to reach the ball's surface and move along it."""
    return 2.5 * eps / steps


class BestIterate:
    """Per slice, the iterate whose prediction has the lowest mean DSC against ``reference`` (ties: the
    higher loss), with that prediction and DSC. Fed by the attack's own forward passes, so it costs no
    extra pass; the last iterate is among the candidates, so the result is never worse than it.
    ``empty`` is the scoring's empty-organ policy; a slice whose every organ is skipped (NaN) counts as
    the worst score for the attacker. ``kind``: the model's output kind, how its logits become masks."""

    def __init__(self, reference: torch.Tensor, empty: str = "one", kind: str = "sigmoid"):
        self.reference = reference.detach().bool()
        self.empty = empty
        self.kind = kind
        self.adversarial: torch.Tensor | None = None
        self.prediction: torch.Tensor | None = None
        self.dsc: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def update(self, x: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> None:
        from core.metrics import mean_dice_on_device

        prediction = masks_from_logits(logits.detach(), self.kind)
        dsc = mean_dice_on_device(prediction, self.reference, self.empty)
        dsc = torch.where(torch.isnan(dsc), torch.inf, dsc)
        loss = loss.detach().double()
        if self.dsc is None:
            self.adversarial, self.prediction, self.dsc, self.loss = x.detach().clone(), prediction, dsc, loss
            return
        better = (dsc < self.dsc) | ((dsc == self.dsc) & (loss > self.loss))
        self.adversarial = torch.where(broadcast_per_image(better, x), x.detach(), self.adversarial)
        self.prediction = torch.where(broadcast_per_image(better, prediction), prediction, self.prediction)
        self.dsc, self.loss = torch.where(better, dsc, self.dsc), torch.where(better, loss, self.loss)


def _iterate(
    model,
    image,
    start,
    eps,
    steps,
    step_size,
    objective,
    direction,
    should_stop,
    precision="fp32",
    on_step=None,
    tracker: BestIterate | None = None,
    norm: str = "linf",
):
    """Steepest steps of ``norm`` (signed gradients for L-inf) on ``objective(logits, step) -> (N,)``, projected
    to the eps ball and [0, 1]. With a ``tracker`` every iterate, the last included (one more forward pass),
    is offered to it."""
    eps = check_eps(eps, norm)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise OptionError(f"steps must be a whole number of at least 1, got {steps}")
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    if not np.isfinite(alpha) or alpha < 0:
        raise OptionError(f"step size must be a non-negative number, got {step_size}")
    clean = image.detach()
    adversarial = start.detach()
    with eval_mode(model), reference_math(image.device, precision):
        for step in range(steps):
            check_stop(should_stop)
            values, grad, logits = loss_and_gradient(model, adversarial, objective, step + 1, precision)
            if tracker is not None:
                tracker.update(adversarial, logits, values)
            if on_step is not None:
                on_step(step, steps, adversarial, logits, values)
            adversarial = project(adversarial + direction * alpha * steepest_step(grad, norm), clean, eps, norm)
        if tracker is not None:
            values, _, logits = loss_and_gradient(model, adversarial, objective, steps + 1, precision, need_grad=False)
            tracker.update(adversarial, logits, values)
    return adversarial.detach()


def bim(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str = "bce",
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
    norm: str = "linf",
) -> torch.Tensor:
    """Basic iterative method / I-FGSM (Kurakin et al.): ``steps`` FGSM steps of ``step_size`` (default
    2.5 eps / steps) from the clean image, each projected to the ``norm`` eps ball and to [0, 1]: PGD
    without the random start."""
    return pgd(
        model,
        image,
        target,
        eps,
        steps=steps,
        step_size=step_size,
        loss=loss,
        random_start=False,
        precision=precision,
        should_stop=should_stop,
        on_step=on_step,
        norm=norm,
    )


def pgd(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str = "bce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
    norm: str = "linf",
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.): BIM from a uniformly random start in the ``norm`` eps ball
    (clipped to [0, 1]): one draw from ``generator`` for the batch, or without one the per-position
    seeds of ``random_start_point`` (seed 0)."""
    check_batch_shape(image, target)
    check_loss(loss)
    eps = check_eps(eps, norm)
    start = random_start_point(image, eps, generator=generator, norm=norm) if random_start else image.detach().clone()
    return _pgd_from(
        model, image, target, start, eps, steps, step_size, loss, precision, should_stop, on_step, norm=norm
    )


def _pgd_from(
    model,
    image,
    target,
    start,
    eps,
    steps,
    step_size,
    loss,
    precision,
    should_stop,
    on_step,
    tracker: BestIterate | None = None,
    norm: str = "linf",
) -> torch.Tensor:
    target = target.detach()
    kind = output_kind(model)
    return _iterate(
        model,
        image,
        start,
        eps,
        steps,
        step_size,
        lambda logits, step: per_image_loss(loss, logits, target, schedule=(step, steps), kind=kind),
        +1.0,
        should_stop,
        precision,
        on_step,
        tracker,
        norm,
    )


def slice_seed(seed: int, slice_id: str) -> int:
    """A 63-bit seed for one slice's random start, from the run's seed and the slice id."""
    digest = hashlib.blake2b(f"{int(seed)}:{slice_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def random_start_point(
    image: torch.Tensor,
    eps: float,
    *,
    seed: int = 0,
    ids: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    norm: str = "linf",
) -> torch.Tensor:
    """``image`` plus uniform noise in [-eps, eps] (L2: a point uniform in the L2 ball of radius eps,
    ``core.attacks.norms.uniform_in_l2_ball``), clipped to [0, 1].

    With ``generator``, one draw for the whole batch. Otherwise each slice draws its own noise on the
    CPU from ``slice_seed(seed, id)`` (ids default to the batch positions), so a slice starts from the
    same point in any batch, on any rank and any device."""
    image = image.detach()
    if norm == "l2":
        return (image + _l2_start_offset(image, eps, seed, ids, generator)).clamp(0.0, 1.0)
    if generator is not None:
        noise = torch.rand(image.shape, generator=generator, device=generator.device, dtype=image.dtype)
    else:
        ids = [str(i) for i in range(image.shape[0])] if ids is None else list(ids)
        if len(ids) != image.shape[0]:
            raise ValueError(f"{len(ids)} slice ids for a batch of {image.shape[0]}")
        noise = torch.stack(
            [
                torch.rand(
                    image.shape[1:], generator=torch.Generator().manual_seed(slice_seed(seed, i)), dtype=image.dtype
                )
                for i in ids
            ]
        )
    return (image + (2 * noise.to(image.device) - 1) * eps).clamp(0.0, 1.0)


def _l2_start_offset(image, eps, seed, ids, generator) -> torch.Tensor:
    """A random offset uniform in the L2 ball per slice: Gaussian direction and a uniform radius draw, from
    ``generator`` for the batch or per slice from ``slice_seed(seed, id)`` like the L-inf start."""
    n = image.shape[0]
    if generator is not None:
        noise = torch.randn(image.shape, generator=generator, device=generator.device, dtype=image.dtype)
        uniform = torch.rand(n, generator=generator, device=generator.device, dtype=image.dtype)
    else:
        ids = [str(i) for i in range(n)] if ids is None else list(ids)
        if len(ids) != n:
            raise ValueError(f"{len(ids)} slice ids for a batch of {n}")
        draws = []
        for i in ids:
            slice_generator = torch.Generator().manual_seed(slice_seed(seed, i))
            draws.append(
                (
                    torch.randn(image.shape[1:], generator=slice_generator, dtype=image.dtype),
                    torch.rand(1, generator=slice_generator, dtype=image.dtype),
                )
            )
        noise, uniform = torch.stack([d[0] for d in draws]), torch.cat([d[1] for d in draws])
    return uniform_in_l2_ball(noise.to(image.device), uniform.to(image.device), eps)


def label_indices(organs: Sequence[str | int] | str | int, labels: LabelSet) -> list[int]:
    """Label names of ``labels`` or label indices -> sorted unique label indices (an unknown name is a
    ``LabelSetError`` naming the label set's labels)."""
    if isinstance(organs, (str, int)):
        organs = [organs]
    indices = set()
    for organ in organs:
        if isinstance(organ, str):
            indices.add(labels.index(organ.strip().lower()))
        elif 0 <= int(organ) < len(labels):
            indices.add(int(organ))
        else:
            raise OptionError(f"label index {organ} out of range 0..{len(labels) - 1}")
    if not indices:
        raise OptionError(f"choose at least one of {', '.join(labels.names)} to erase")
    return sorted(indices)


def erasure_loss(logits: torch.Tensor, labels: Sequence[int], kind: str = "sigmoid") -> torch.Tensor:
    """Per pixel, how much the prediction still holds the labels at indices ``labels``: sigmoid, BCE of their
    logits against 0, (N, len(labels), H, W); softmax, -log(1 - their classes' total probability) =
    softplus(logsumexp(their logits) - logsumexp(the other channels')), (N, H, W)."""
    if kind == "sigmoid":
        chosen = logits[:, list(labels)]
        return F.binary_cross_entropy_with_logits(chosen, torch.zeros_like(chosen), reduction="none")
    chosen = [1 + label for label in labels]  # channel 0 is the background
    others = [channel for channel in range(logits.shape[1]) if channel not in chosen]
    return F.softplus(torch.logsumexp(logits[:, chosen], dim=1) - torch.logsumexp(logits[:, others], dim=1))


def erase_organs(
    model: torch.nn.Module,
    image: torch.Tensor,
    organs: Sequence[str | int] | str | int,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Targeted attack: descend ``erasure_loss`` so those labels of the model's labels vanish from the
    prediction, leaving the other labels out of the objective. Projected like ``bim``."""
    check_batch_shape(image)
    channels = label_indices(organs, model_labels(model))
    kind = output_kind(model)

    def objective(logits: torch.Tensor, step: int) -> torch.Tensor:
        return erasure_loss(logits.float(), channels, kind).flatten(1).mean(1)

    return _iterate(
        model, image, image.detach().clone(), eps, steps, step_size, objective, -1.0, should_stop, precision, on_step
    )


def run_iterative(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """BIM (from the clean image) or PGD (from a random start: ``context.generator``, else per slice from
    ``config.seed``), with the best iterate by DSC when ``config.best_iterate``."""
    check_batch_shape(image, target, model_labels(model))
    check_loss(config.loss)
    clean_pred = clean_prediction(model, image, config, context)
    if config.method == "pgd":
        start = random_start_point(
            image, config.eps, seed=config.seed, ids=context.ids, generator=context.generator, norm=config.norm
        )
    else:
        start = image.detach().clone()
    reference = scoring_reference(clean_pred, context)
    tracker = BestIterate(reference, config.empty, output_kind(model)) if config.best_iterate else None
    adversarial = _pgd_from(
        model,
        image,
        clean_pred.float() if target is None else target,
        start,
        config.eps,
        config.steps,
        config.step_size,
        config.loss,
        config.precision,
        context.should_stop,
        context.on_step,
        tracker,
        config.norm,
    )
    if tracker is not None:
        return AttackOutput(tracker.adversarial, clean_pred, tracker.prediction)
    return AttackOutput(adversarial, clean_pred)


def run_erase(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """The targeted erasure of ``config.organs`` (its own objective: ``target`` and the loss do not apply)."""
    clean_pred = clean_prediction(model, image, config, context)
    adversarial = erase_organs(
        model,
        image,
        config.organs,
        config.eps,
        steps=config.steps,
        step_size=config.step_size,
        precision=config.precision,
        should_stop=context.should_stop,
        on_step=context.on_step,
    )
    return AttackOutput(adversarial, clean_pred)
