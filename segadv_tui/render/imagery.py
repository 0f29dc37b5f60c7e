"""RGB pictures of a slice, its masks and an attack, shared by the PNG figures and the terminal views.

Every function returns a uint8 (H, W, 3) array; the renderers only decide where the pixels go.
"""

from __future__ import annotations

import numpy as np

from core.organs import ORGANS

# One colour per organ everywhere in the tool (large bowel, small bowel, stomach).
ORGAN_COLOURS = {
    "large_bowel": (255, 170, 40),
    "small_bowel": (80, 200, 255),
    "stomach": (230, 80, 200),
}
# The paper's difference map: true positive green, false positive blue, false negative red.
TP_COLOUR, FP_COLOUR, FN_COLOUR = (40, 200, 60), (50, 110, 255), (235, 50, 50)


def gray(image: np.ndarray) -> np.ndarray:
    """A [0, 1] slice (H, W) as an RGB picture."""
    g = (np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def perturbation_scale(delta: np.ndarray, eps: float | None = None) -> float:
    """The value drawn as full white in ``perturbation``: max(eps, realised L-inf)."""
    linf = float(np.abs(delta).max()) if np.size(delta) else 0.0
    return max(float(eps or 0.0), linf)


def perturbation(delta: np.ndarray, eps: float | None = None) -> np.ndarray:
    """A signed perturbation amplified to the full grey range: -max -> black, 0 -> mid grey, +max -> white.

    The scale is ``perturbation_scale``: eps (so pictures at one eps compare), or the realised L-inf
    where that is larger (the paper's FGSM moves pixels by up to 2 eps) so nothing saturates.
    """
    delta = np.asarray(delta, dtype=np.float32)
    scale = perturbation_scale(delta, eps)
    if scale <= 0:
        return gray(np.full(delta.shape, 0.5, dtype=np.float32))
    return gray(0.5 + 0.5 * np.clip(delta / scale, -1.0, 1.0))


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The slice in grey with each organ's mask (3, H, W) tinted in its colour."""
    rgb = gray(image).astype(np.float32)
    for organ, mask in zip(ORGANS, np.asarray(masks).astype(bool)):
        colour = np.array(ORGAN_COLOURS[organ], dtype=np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    return (rgb + 0.5).astype(np.uint8)


def difference_map(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """TP green, FP blue, FN red over all organs (3, H, W); black elsewhere, as the paper's figures."""
    truth = np.asarray(truth).astype(bool)
    prediction = np.asarray(prediction).astype(bool)
    rgb = np.zeros(truth.shape[1:] + (3,), dtype=np.uint8)
    # Later layers win where organs overlap: a miss (red) is the thing a reader must not overlook.
    rgb[(prediction & truth).any(axis=0)] = TP_COLOUR
    rgb[(prediction & ~truth).any(axis=0)] = FP_COLOUR
    rgb[(~prediction & truth).any(axis=0)] = FN_COLOUR
    return rgb
