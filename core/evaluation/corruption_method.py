"""The registry's ``corrupt`` method: not an attack but an MRI artefact (``core.evaluation.corruptions``) at
one severity, so ``segadv attack --method corrupt`` and the explorer score it as they score every attack.

Each slice is seeded from ``config.seed`` and its id as ``segadv corrupt`` seeds it, so a slice gets the
same artefact here, there and in every batch. eps is ignored: the severity sets the strength.
"""

from __future__ import annotations

from core.attacks.config import AttackConfig
from core.attacks.iterative import slice_seed
from core.attacks.runner import AttackContext, AttackOutput, clean_prediction
from core.evaluation.corruptions import corrupt


def run_corrupt(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """``image`` (N, 1, H, W) under ``config.corruption`` at ``config.severity``; ``target`` is unused."""
    ids = context.ids if context.ids is not None else [str(i) for i in range(image.shape[0])]
    corrupted = corrupt(image, config.corruption, config.severity, [slice_seed(config.seed, i) for i in ids])
    clean_pred = clean_prediction(model, image, config, context) if context.predict_result else None
    return AttackOutput(corrupted, clean_pred)
