"""The Square attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L-inf, for segmentation: a
black-box random search that uses no gradient, so it sees through masked gradients.

Per slice, from ``x + eps * s`` with a random sign s per image column (the paper's vertical stripes):

- at iteration i of N, a square of side ``round(sqrt(p_i * H * W))`` (at least 1, at most H - 1) at a
  random position gets a random sign: inside it the perturbation becomes ``+eps`` or ``-eps`` (then [0, 1]);
- the update is kept when it raises the per-image loss (``core.losses``, in the form of the model's output
  kind: a softmax model's ``bce`` is the cross-entropy over its classes) against the target;
- ``p_i`` is the paper's schedule: ``P_INIT`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000
  and 8000 of a 10000-iteration run, rescaled to N (``square_share``).

A proposal that would not change the slice (the square already holds that sign everywhere) takes the other
sign, as the paper resamples until the square changes. Random draws come per slice from ``slice_seed(seed,
id)`` (or one ``generator`` for the batch), so a batch is attacked as its slices one by one. With
``best_iterate`` the result is, per slice, the point with the lowest mean DSC among all those evaluated
(``core.attacks.iterative.BestIterate``). Cost: N + 1 forward passes per slice, no backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from core.attacks.batch import broadcast_per_image, check_batch_shape
from core.attacks.config import AttackConfig, check_eps
from core.attacks.control import StepCallback, StopCheck, check_stop
from core.attacks.iterative import BestIterate, slice_seed
from core.attacks.runner import AttackContext, AttackOutput, clean_prediction, scoring_reference
from core.errors import OptionError
from core.losses import check_loss, per_image_loss
from core.models.inference import eval_mode, output_kind, reference_math, safe_logits

# AutoAttack's Square starts with squares covering 80 % of the image: with the few hundred queries a
# segmentation evaluation affords, the paper's ImageNet value (0.05) leaves most of the budget on tiny squares.
P_INIT = 0.8
# The paper's schedule: p halves after these iterations of a 10000-iteration run.
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_share(iteration: int, iterations: int, p_init: float = P_INIT) -> float:
    """p at 0-based ``iteration`` of ``iterations``: the share of the image a square covers."""
    scaled = int(iteration / iterations * 10000)
    return p_init / 2 ** sum(scaled > mark for mark in HALVINGS)


def square_side(share: float, height: int, width: int) -> int:
    """The side of a square covering ``share`` of an H x W slice: at least 1, at most H - 1 (W - 1)."""
    side = int(round(math.sqrt(share * height * width)))
    return max(1, min(side, height - 1, width - 1))


def _generators(n: int, seed: int, ids: Sequence[str] | None, generator: torch.Generator | None):
    """One CPU generator per slice (from ``slice_seed``), or the given one shared by the batch."""
    if generator is not None:
        return [generator] * n
    ids = [str(i) for i in range(n)] if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} slice ids for a batch of {n}")
    return [torch.Generator().manual_seed(slice_seed(seed, i)) for i in ids]


def _sign(generator: torch.Generator, size) -> torch.Tensor:
    return torch.randint(0, 2, size, generator=generator, device=generator.device).float() * 2 - 1


def square_attack(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    *,
    steps: int = 1000,
    loss: str = "bce",
    seed: int = 0,
    ids: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
    p_init: float = P_INIT,
    tracker: BestIterate | None = None,
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the best point by the loss, its loss per slice (N,)) after ``steps`` square updates (see the module
    doc); every point evaluated is offered to ``tracker``."""
    check_batch_shape(image, target)
    check_loss(loss)
    eps = check_eps(eps)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise OptionError(f"steps must be a whole number of at least 1, got {steps}")
    n, _, height, width = image.shape
    clean, target = image.detach(), target.detach()
    generators = _generators(n, seed, ids, generator)
    kind = output_kind(model)

    def evaluate(x: torch.Tensor, step: int) -> torch.Tensor:
        logits = safe_logits(model, x, precision)
        values = per_image_loss(loss, logits, target, schedule=(step, steps + 1), kind=kind).detach()
        if tracker is not None:
            tracker.update(x, logits, values)
        if on_step is not None:
            on_step(step - 1, steps + 1, x, logits, values)
        return values

    with eval_mode(model), reference_math(image.device, precision), torch.no_grad():
        stripes = torch.stack([_sign(g, (1, 1, width)) for g in generators]).to(clean)
        best = (clean + eps * stripes).clamp(0.0, 1.0)
        best_loss = evaluate(best, 1)
        for i in range(steps):
            check_stop(should_stop)
            side = square_side(square_share(i, steps, p_init), height, width)
            proposal = best.clone()
            for index, g in enumerate(generators):
                top = int(torch.randint(0, height - side + 1, (1,), generator=g, device=g.device))
                left = int(torch.randint(0, width - side + 1, (1,), generator=g, device=g.device))
                sign = float(_sign(g, (1,)))
                window = (index, slice(None), slice(top, top + side), slice(left, left + side))
                square = (clean[window] + sign * eps).clamp(0.0, 1.0)
                if torch.equal(square, best[window]):  # no change: the other sign
                    square = (clean[window] - sign * eps).clamp(0.0, 1.0)
                proposal[window] = square
            proposal_loss = evaluate(proposal, i + 2)
            improved = proposal_loss > best_loss
            best = torch.where(broadcast_per_image(improved, best), proposal, best)
            best_loss = torch.where(improved, proposal_loss, best_loss)
    return best, best_loss


def run_square(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """The registry's Square: against ``target`` (None: the clean prediction), per-slice draws from
    ``config.seed``, the best iterate by DSC against the scoring reference when ``config.best_iterate``."""
    clean_pred = clean_prediction(model, image, config, context)
    reference = scoring_reference(clean_pred, context)
    tracker = BestIterate(reference, config.empty, output_kind(model)) if config.best_iterate else None
    adversarial, _ = square_attack(
        model,
        image,
        clean_pred.float() if target is None else target,
        config.eps,
        steps=config.steps,
        loss=config.loss,
        seed=config.seed,
        ids=context.ids,
        generator=context.generator,
        tracker=tracker,
        precision=config.precision,
        should_stop=context.should_stop,
        on_step=context.on_step,
    )
    if tracker is not None:
        return AttackOutput(tracker.adversarial, clean_pred, tracker.prediction)
    return AttackOutput(adversarial, clean_pred)
