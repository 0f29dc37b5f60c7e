"""The worst-case ensemble: per slice, the lowest mean DSC over a fixed list of APGD runs (SEA's recipe,
Croce, Singh & Hein 2024, for sigmoid organ channels).

The members (``core.attacks.config.ENSEMBLE``: loss and radius schedule) are each an APGD config of
their own (``AttackConfig.ensemble_members``) run with the slice's own seed, so each member's part of the
result is exactly what that APGD run gives alone, and the ensemble is, per slice, no better for the
model than any member. Ties go to the earlier member.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from core.attacks.apgd import run_apgd, stage_steps
from core.attacks.batch import broadcast_per_image
from core.attacks.config import ENSEMBLE, AttackConfig
from core.attacks.runner import AttackContext, AttackOutput, clean_prediction, scoring_reference
from core.metrics import mean_dice_on_device


def passes_per_slice(config: AttackConfig) -> dict[str, int]:
    """The attack's cost per slice in passes through the model: forward + backward, and forward only
    (the clean prediction; the scoring of the result: FGSM's adversarial image, the last iterate of
    BIM / PGD / erase, the last iterate of each APGD stage)."""
    if config.method == "fgsm":  # the L2 form predicts the clean slice apart from its gradient pass
        return {"forward_backward": 1, "forward": 2 if config.norm == "l2" else 1}
    if config.method == "ensemble":
        members = config.ensemble_members()
        return {
            "forward_backward": sum(member.steps for member in members),
            "forward": 1 + sum(len(stage_steps(member.steps, len(member.radii))) for member in members),
        }
    if config.method == "square":  # clean, start, one per query; without the best iterate a scoring pass
        return {"forward_backward": 0, "forward": config.steps + 2 + (not config.best_iterate)}
    if config.method == "apgd":
        return {"forward_backward": config.steps, "forward": 1 + len(stage_steps(config.steps, len(config.radii)))}
    return {"forward_backward": config.steps, "forward": 2}


def run_ensemble(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """Every member on the batch, then per slice the member whose result has the lowest mean DSC
    against the scoring reference (ties: the earlier member)."""
    clean_pred = clean_prediction(model, image, config, context)
    reference = scoring_reference(clean_pred, context)
    members = config.ensemble_members()
    names = [member.name for member in ENSEMBLE]
    done = 0
    total = sum(member.steps for member in members)
    best: AttackOutput | None = None
    best_dsc = winner = None
    for index, member in enumerate(members):
        on_step = None
        if context.on_step is not None:

            def on_step(step, _steps, iterate, logits, loss, offset=done):  # one step count over all members
                context.on_step(offset + step, total, iterate, logits, loss)

        output = run_apgd(model, image, target, member, replace(context, clean_pred=clean_pred, on_step=on_step))
        done += member.steps
        dsc = mean_dice_on_device(output.adv_pred, reference, config.empty)
        dsc = torch.where(torch.isnan(dsc), torch.inf, dsc)
        if best is None:
            best, best_dsc = output, dsc
            winner = torch.zeros(dsc.shape, dtype=torch.long, device=dsc.device)
            continue
        better = dsc < best_dsc
        best = AttackOutput(
            torch.where(broadcast_per_image(better, output.adversarial), output.adversarial, best.adversarial),
            clean_pred,
            torch.where(broadcast_per_image(better, output.adv_pred), output.adv_pred, best.adv_pred),
        )
        best_dsc = torch.where(better, dsc, best_dsc)
        winner = torch.where(better, torch.full_like(winner, index), winner)
    assert best is not None and winner is not None  # the ensemble has members
    return AttackOutput(best.adversarial, clean_pred, best.adv_pred, members=[names[i] for i in winner.tolist()])
