"""What an attacked batch is: images (N, 1, H, W) in [0, 1] with targets (N, labels, H, W), per-image
values broadcast over it, and the realised L-inf / L2 of a perturbation per image.
"""

from __future__ import annotations

import numpy as np
import torch

from core.labels import UW_MADISON, LabelSet


def model_labels(model: torch.nn.Module) -> LabelSet:
    """The label set of ``model``'s output channels: its ``labels`` (every segadv model has them); a bare
    module without, UW-Madison's, as a checkpoint without labels metadata is read."""
    return getattr(model, "labels", UW_MADISON)


def check_batch_shape(image: torch.Tensor, target: torch.Tensor | None = None, labels: LabelSet | None = None) -> None:
    """The image a batch of grey slices and the target one mask per label (of ``labels`` where given) and image."""
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"image must have shape (N, 1, H, W), got {tuple(image.shape)}")
    if target is not None:
        channels = (len(labels),) if labels is not None else tuple(target.shape[1:2])
        expected = (image.shape[0], *channels, *image.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"target must have shape {expected} for this image, got {tuple(target.shape)}")


def perturbation_norms(image: torch.Tensor, adversarial: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Realised L-inf and L2 of ``adversarial - image`` per image, float64 (N,) each."""
    delta = (adversarial.detach() - image.detach()).flatten(1).float()
    linf = delta.abs().amax(dim=1) if delta.shape[1] else torch.zeros(delta.shape[0])
    l2 = delta.norm(dim=1)
    return linf.cpu().double().numpy(), l2.cpu().double().numpy()


def broadcast_per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) values shaped to broadcast over a batch like ``like``."""
    return values.view(-1, *([1] * (like.ndim - 1)))
