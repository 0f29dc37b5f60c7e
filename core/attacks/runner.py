"""The registry's runners share one signature, ``function(model, image, target, config, context) ->
AttackOutput`` (``core.attacks.config.METHODS``): the context a runner may use, its output, the
dispatch, and the clean prediction and scoring reference runners start from.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.attacks.config import AttackConfig
from core.attacks.control import StepCallback, StopCheck, check_stop
from core.attacks.gradient_cache import GradientCache


@dataclass
class AttackContext:
    """What a runner may use beyond the config: a gradient cache (FGSM; ``cache_key`` identifies the
    gradient: checkpoint, slice id(s), loss, target, mode), the clean prediction when already known, a
    generator for random starts (default: per slice, from ``config.seed`` and ``ids``, see
    ``random_start_point``), the slice ids, the scoring reference (the ground truth; None: the clean
    prediction), which the best iterate is judged against, a stop check and a per-iteration callback
    for live views. ``predict_result`` False: the caller scores the result on another model (a
    transfer), so a runner need not spend a forward pass predicting it with the attacked one."""

    cache: GradientCache | None = None
    cache_key: Hashable | None = None
    clean_pred: torch.Tensor | None = None
    generator: torch.Generator | None = None
    should_stop: StopCheck | None = None
    on_step: StepCallback | None = None
    ids: Sequence[str] | None = None
    reference: torch.Tensor | None = None
    predict_result: bool = True


@dataclass
class AttackOutput:
    """A runner's result: the adversarial batch, and what it learnt on the way (None: not computed);
    ``members``: for the ensemble, the member that won each slice."""

    adversarial: torch.Tensor
    clean_pred: torch.Tensor | None = None
    adv_pred: torch.Tensor | None = None
    zero_grad_fraction: np.ndarray | None = None
    members: list[str] | None = None


def run_attack(model, image, target, config: AttackConfig, context: AttackContext | None = None) -> AttackOutput:
    """``config``'s attack on ``image`` against ``target`` (None: the model's own clean prediction)."""
    context = context or AttackContext()
    check_stop(context.should_stop)
    return config.entry.function()(model, image, target, config, context)


def clean_prediction(model, image, config: AttackConfig, context: AttackContext) -> torch.Tensor:
    if context.clean_pred is not None:
        return context.clean_pred.to(image.device)
    from core.models.inference import predict

    return predict(model, image, config.precision)


def scoring_reference(clean_pred: torch.Tensor, context: AttackContext) -> torch.Tensor:
    """What a slice is scored against: the ground truth given in ``context``, else the clean prediction."""
    return clean_pred if context.reference is None else context.reference.to(clean_pred.device)
