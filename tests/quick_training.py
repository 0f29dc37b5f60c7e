"""A training run small enough for a test: the ``small`` U-Net from random weights, on the CPU, no workers."""

from __future__ import annotations

from pathlib import Path

from core.training.loop import TrainConfig


def quick_train_config(data: Path, out: Path, img_size: int, **changes) -> TrainConfig:
    """One epoch over ``data`` at ``img_size`` in batches of 8; ``changes`` set any other ``TrainConfig`` field."""
    settings: dict = dict(
        model="small",
        data=data,
        out=out,
        encoder_weights="none",
        epochs=1,
        batch_size=8,
        img_size=img_size,
        workers=0,
    )
    return TrainConfig(**{**settings, **changes})
