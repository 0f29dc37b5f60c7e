"""Stopping and watching an attack: the stop check every loop polls (``AttackCancelled``) and the
per-step callback iterative attacks report through, for live views.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

StopCheck = Callable[[], bool]
# on_step(step, steps, iterate, logits, loss): an iterative attack's progress, for live views. Called
# once per step with the iterate the step starts from (step 0: the start point), its fp32 logits and its
# per-image objective, all computed anyway for the step's gradient, so watching costs no extra pass.
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


class AttackCancelled(Exception):
    """Raised when ``should_stop()`` returned True; nothing partial is returned."""


def check_stop(should_stop: StopCheck | None) -> None:
    """Raise ``AttackCancelled`` when ``should_stop()`` says so (None: never)."""
    if should_stop is not None and should_stop():
        raise AttackCancelled("cancelled")
