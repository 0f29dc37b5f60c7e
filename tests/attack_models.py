"""What the attack tests share: a model whose logits have a closed form, and a batch's slices attacked alone."""

from __future__ import annotations

import torch

from core.attacks.config import AttackConfig
from core.attacks.runner import AttackContext, AttackOutput, run_attack


class PixelLinear(torch.nn.Module):
    """logits[c] = w[c] * x + b[c] at every pixel: its input gradient has a closed form, and no pixel or
    image depends on another."""

    def __init__(self, w=(4.0, -3.0, 5.0), b=(-1.0, 1.2, -2.6)):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w).view(1, 3, 1, 1))
        self.b = torch.nn.Parameter(torch.tensor(b).view(1, 3, 1, 1))

    def forward(self, image):
        return self.w * image + self.b


def attacked_alone(
    model, image: torch.Tensor, truth: torch.Tensor, config: AttackConfig, ids: list[str]
) -> list[AttackOutput]:
    """``config``'s attack on each slice of the batch in a batch of its own (truth as the target and the
    scoring reference): what the batch's attack must equal slice by slice."""
    return [
        run_attack(
            model,
            image[i : i + 1],
            truth[i : i + 1],
            config,
            AttackContext(ids=ids[i : i + 1], reference=truth[i : i + 1]),
        )
        for i in range(len(ids))
    ]
