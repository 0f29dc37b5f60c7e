"""APGD (Croce & Hein, ICML 2020), L-inf and L2 (AutoAttack's), for the organ segmenters, with SEA's radius
schedule.

Algorithm 1 of the paper, per image of the batch (each slice has its own step size and checkpoints'
bookkeeping, so a batch is attacked as its slices one by one):

- x(1) = P(x(0) + eta sign(grad f(x(0)))), eta = 2 eps;
- x(k+1) = P(x(k) + alpha (z(k+1) - x(k)) + (1 - alpha) (x(k) - x(k-1))), z(k+1) = P(x(k) + eta sign(grad
  f(x(k)))), momentum alpha = 0.75; P projects to the eps ball and to [0, 1];
- at the checkpoints w_j = ceil(p_j N) (p_0 = 0, p_1 = 0.22, p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06))
  eta is halved and the iterate restarts from the best point x_max when (1) fewer than rho = 0.75 of the
  steps since the last checkpoint raised the loss, or (2) eta was not halved at the last checkpoint and
  the best loss has not risen since.

The paper's output is x_max (the best point by the loss). With ``best_iterate`` the result is instead
the iterate with the lowest mean DSC (``core.attacks.iterative.BestIterate``): the metric we report, tracked from
the same forward passes. Cost: N forward + backward passes and one forward pass (the last iterate,
which also gives its prediction for scoring), as PGD-N with its scoring pass.

``norm="l2"`` is AutoAttack's L2 APGD: the same schedule and momentum, with the step
``eta * grad / ||grad||_2`` in place of ``eta * sign(grad)`` and P the projection onto the L2 ball then [0, 1]
(``core.attacks.norms``); eta starts at 2 eps in both.

``radii`` (SEA, Croce, Singh & Hein 2024): stages at radius r * eps for r in e.g. (2, 1.5, 1), the larger
radii taking 30 % of the steps each (``stage_steps``), each stage starting from the previous stage's
result projected to its ball; only the last stage (radius eps) gives the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from core.attacks.batch import broadcast_per_image, check_batch_shape
from core.attacks.config import AttackConfig, check_eps, parse_radii
from core.attacks.control import StepCallback, StopCheck, check_stop
from core.attacks.gradients import loss_and_gradient
from core.attacks.iterative import BestIterate, random_start_point
from core.attacks.norms import project as project_to_ball
from core.attacks.norms import steepest_step
from core.attacks.runner import AttackContext, AttackOutput, clean_prediction, scoring_reference
from core.errors import OptionError
from core.losses import check_loss, per_image_loss
from core.models.inference import eval_mode, masks_from_logits, output_kind, reference_math

MOMENTUM = 0.75
RHO = 0.75  # condition 1: at least this share of the steps since the last checkpoint must raise the loss
# The length of the first checkpoint interval, how much each next one shrinks, and the shortest (shares of N).
FIRST_INTERVAL, INTERVAL_SHRINK, MIN_INTERVAL = 0.22, 0.03, 0.06
LARGER_RADII_SHARE = 0.6  # SEA: 30 % of the steps at 2 eps, 30 % at 1.5 eps, the rest at eps

Objective = Callable[[torch.Tensor, int], torch.Tensor]


def checkpoints(steps: int) -> list[int]:
    """The checkpoints w_j = ceil(p_j N) of an N-step run, from w_0 = 0 (duplicates removed)."""
    shares = [0.0, FIRST_INTERVAL]
    while True:
        following = shares[-1] + max(shares[-1] - shares[-2] - INTERVAL_SHRINK, MIN_INTERVAL)
        if following > 1.0 + 1e-12:
            break
        shares.append(following)
    # round() first: 0.22 + 0.19 is 0.41000000000000003 in floats, and ceil must not make 41 into 42.
    return sorted({math.ceil(round(share * steps, 9)) for share in shares})


def stage_steps(steps: int, stages: int) -> list[int]:
    """Steps per radius stage: the larger radii share 60 % of them equally, the last stage the rest."""
    if stages == 1:
        return [steps]
    early = [int(LARGER_RADII_SHARE * steps / (stages - 1))] * (stages - 1)
    early = [max(1, n) for n in early]
    if sum(early) >= steps:
        raise OptionError(f"{steps} steps are too few for {stages} radius stages")
    return early + [steps - sum(early)]


@dataclass
class ApgdTrace:
    """What a run did, per step and image, for tests and diagnostics: ``step_sizes[k]`` the eta of step k,
    ``losses[k]`` the loss at x(k) (k = 0..N), ``halved[m]`` which images halved eta at checkpoint m."""

    step_sizes: list[torch.Tensor] = field(default_factory=list)
    losses: list[torch.Tensor] = field(default_factory=list)
    halved: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class StageResult:
    best_x: torch.Tensor  # x_max, the best point by the loss
    best_loss: torch.Tensor
    best_prediction: torch.Tensor


def apgd_stage(
    model: torch.nn.Module,
    image: torch.Tensor,
    start: torch.Tensor,
    eps: float,
    steps: int,
    objective: Objective,
    *,
    precision: str = "fp32",
    tracker: BestIterate | None = None,
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
    step_offset: int = 0,
    total_steps: int | None = None,
    trace: ApgdTrace | None = None,
    norm: str = "linf",
) -> StageResult:
    """One APGD run of ``steps`` steps maximising ``objective(logits, t) -> (N,)`` (t = 1 at the start
    point) in the eps ball around ``image``, from ``start`` (projected to the ball). Every iterate is
    offered to ``tracker``; ``on_step(step, total_steps, iterate, logits, loss)`` gets each step's start
    point, the step counted from ``step_offset`` (``core.attacks.control.StepCallback``)."""
    clean = image.detach()

    def project(z: torch.Tensor) -> torch.Tensor:
        return project_to_ball(z, clean, eps, norm)

    kind = output_kind(model)
    marks = {w for w in checkpoints(steps) if 0 < w < steps}
    total_steps = steps if total_steps is None else total_steps
    x = project(start.detach())
    loss, grad, logits = loss_and_gradient(model, x, objective, 1, precision)
    if tracker is not None:
        tracker.update(x, logits, loss)
    if on_step is not None:
        on_step(step_offset, total_steps, x, logits, loss)
    n = x.shape[0]
    eta = torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device)
    best_loss, best_x, best_grad = loss.clone(), x.clone(), grad.clone()
    best_prediction = masks_from_logits(logits, kind)
    previous_loss, increases = loss, torch.zeros(n, device=x.device)
    last_mark, best_at_mark = 0, best_loss.clone()
    halved_at_mark = torch.zeros(n, dtype=torch.bool, device=x.device)
    if trace is not None:
        trace.losses.append(loss.clone())
    x_previous = x
    for k in range(steps):
        check_stop(should_stop)
        if trace is not None:
            trace.step_sizes.append(eta.clone())
        z = project(x + broadcast_per_image(eta, x) * steepest_step(grad, norm))
        if k > 0:
            z = project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_previous))
        x_previous, x = x, z
        # The last iterate needs no gradient: one forward pass scores it.
        loss, grad, logits = loss_and_gradient(model, x, objective, k + 2, precision, need_grad=k < steps - 1)
        if tracker is not None:
            tracker.update(x, logits, loss)
        if on_step is not None and k + 1 < steps:  # the iterate the next step starts from (before a restart)
            on_step(step_offset + k + 1, total_steps, x, logits, loss)
        if trace is not None:
            trace.losses.append(loss.clone())
        increases += loss > previous_loss
        improved = loss > best_loss
        best_loss = torch.where(improved, loss, best_loss)
        best_x = torch.where(broadcast_per_image(improved, x), x, best_x)
        best_prediction = torch.where(
            broadcast_per_image(improved, best_prediction), masks_from_logits(logits, kind), best_prediction
        )
        if grad is not None:
            best_grad = torch.where(broadcast_per_image(improved, grad), grad, best_grad)
        previous_loss = loss
        if k + 1 in marks:
            mark = k + 1
            stalled = increases < RHO * (mark - last_mark)
            unchanged = ~halved_at_mark & (best_loss <= best_at_mark)
            halve = stalled | unchanged
            eta = torch.where(halve, eta / 2, eta)
            x = torch.where(broadcast_per_image(halve, x), best_x, x)
            grad = torch.where(broadcast_per_image(halve, grad), best_grad, grad)
            previous_loss = torch.where(halve, best_loss, previous_loss)
            halved_at_mark, best_at_mark, last_mark = halve, best_loss.clone(), mark
            increases = torch.zeros_like(increases)
            if trace is not None:
                trace.halved[mark] = halve.clone()
    return StageResult(best_x, best_loss, best_prediction)


@dataclass
class IterateResult:
    """An attack's chosen point per slice and its prediction (bool (N, L, H, W))."""

    adversarial: torch.Tensor
    prediction: torch.Tensor


def apgd(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    *,
    steps: int = 100,
    loss: str = "bce",
    radii=(1.0,),
    start: torch.Tensor | None = None,
    best_iterate: bool = True,
    reference: torch.Tensor | None = None,
    empty: str = "one",
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
    trace: ApgdTrace | None = None,
    norm: str = "linf",
) -> IterateResult:
    """APGD on ``loss`` against ``target`` (see the module doc), from ``start`` (default: the clean image).

    ``best_iterate``: per slice the iterate with the lowest mean DSC against ``reference`` (default: the
    target) under the ``empty`` policy; otherwise the best point by the loss (the paper's output).
    ``seg-bce``'s schedule runs over all ``steps``, across the radius stages."""
    check_batch_shape(image, target)
    check_loss(loss)
    eps = check_eps(eps, norm)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise OptionError(f"steps must be a whole number of at least 1, got {steps}")
    radii = parse_radii(radii)
    target = target.detach()
    reference = target if reference is None else reference
    point = image.detach() if start is None else start.detach()
    kind = output_kind(model)
    offset = 0
    with eval_mode(model), reference_math(image.device, precision):
        for radius, stage in zip(radii, stage_steps(int(steps), len(radii))):
            tracker = BestIterate(reference, empty, kind) if best_iterate else None

            def objective(logits: torch.Tensor, t: int, offset: int = offset) -> torch.Tensor:
                return per_image_loss(loss, logits, target, schedule=(offset + t, steps), kind=kind)

            result = apgd_stage(
                model,
                image,
                point,
                radius * eps,
                stage,
                objective,
                precision=precision,
                tracker=tracker,
                should_stop=should_stop,
                on_step=on_step,
                step_offset=offset,
                total_steps=steps,
                trace=trace,
                norm=norm,
            )
            offset += stage
            if tracker is not None:
                point, prediction = tracker.adversarial, tracker.prediction
            else:
                point, prediction = result.best_x, result.best_prediction
    return IterateResult(point, prediction)


def run_apgd(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """The registry's APGD: from a random start in the first radius' ball (per slice, from ``config.seed``),
    best iterate judged against the scoring reference."""
    clean_pred = clean_prediction(model, image, config, context)
    start = random_start_point(
        image,
        config.radii[0] * config.eps,
        seed=config.seed,
        ids=context.ids,
        generator=context.generator,
        norm=config.norm,
    )
    result = apgd(
        model,
        image,
        clean_pred.float() if target is None else target,
        config.eps,
        steps=config.steps,
        loss=config.loss,
        radii=config.radii,
        start=start,
        best_iterate=bool(config.best_iterate),  # AttackConfig resolves None to the method's default
        reference=scoring_reference(clean_pred, context),
        empty=config.empty,
        precision=config.precision,
        should_stop=context.should_stop,
        on_step=context.on_step,
        norm=config.norm,
    )
    return AttackOutput(result.adversarial, clean_pred, result.prediction)
