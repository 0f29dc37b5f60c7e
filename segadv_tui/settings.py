"""What the explorer asks for and what it shows (settings, slices, frames, curves), without torch.

The app imports these at start-up, before torch has loaded; :mod:`segadv_tui.explorer` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.data import SliceRecord, load_slice, read_slice, resize_image

EPS_STEP_FINE = 0.001
EPS_STEP_COARSE = 0.005
# Eps values of the DSC-against-eps curve (FGSM from the shared gradient: one backward, then forwards).
CURVE_EPS = tuple(round(0.005 * i, 3) for i in range(11))


def clamp_eps(value: float) -> float:
    """Epsilon kept in [0, 1] and rounded to 1e-6 so repeated steps do not drift (0.1 + 0.001 ...)."""
    return round(min(1.0, max(0.0, float(value))), 6)


@dataclass(frozen=True)
class AttackSettings:
    loss: str = "bce"
    method: str = "fgsm"
    target: str = "gt"  # "gt" | "pred"
    mode: str = "textbook"  # FGSM only; BIM / PGD are textbook attacks
    eps: float = 0.009
    steps: int = 10
    empty: str = "one"

    def with_eps(self, eps: float) -> "AttackSettings":
        return replace(self, eps=clamp_eps(eps))

    @property
    def label(self) -> str:
        mode = f" {self.mode}" if self.method == "fgsm" else f" {self.steps} steps"
        return f"eps {self.eps:.3f} · {self.method.upper()}{mode} · {self.loss} loss · target {self.target}"


@dataclass(frozen=True)
class SliceData:
    """A slice at model resolution; ``truth`` is None for a lone PNG (no ground truth)."""

    id: str
    image: np.ndarray  # float32 (S, S) in [0, 1]
    truth: np.ndarray | None  # uint8 (3, S, S)


def load_slice_data(source: SliceRecord | Path, img_size: int) -> SliceData:
    """A data set record (with its masks) or a lone PNG file (no ground truth), at model resolution."""
    if isinstance(source, SliceRecord):
        image, masks = load_slice(source, img_size)
        return SliceData(source.id, image, masks)
    return SliceData(Path(source).name, resize_image(read_slice(source), img_size), None)


@dataclass(frozen=True)
class Frame:
    """One computed view: pictures' data and scores, for the request that asked for it."""

    request_id: int
    checkpoint: str
    slice_id: str
    settings: AttackSettings
    image: np.ndarray  # float32 (S, S)
    adversarial: np.ndarray  # float32 (S, S)
    reference: np.ndarray  # bool (3, S, S): ground truth, or the clean prediction when there is none
    has_truth: bool
    clean_prediction: np.ndarray  # bool (3, S, S)
    adversarial_prediction: np.ndarray  # bool (3, S, S)
    dsc_clean: np.ndarray  # (3,) per organ, NaN where the empty policy skips
    dsc_adv: np.ndarray  # (3,)
    attack_success: np.ndarray  # (3,), NaN where undefined (clean DSC 0)
    mean_clean: float
    mean_adv: float
    mean_attack_success: float
    linf: float
    l2: float
    seconds: float


@dataclass(frozen=True)
class Curve:
    """Mean DSC of FGSM against eps for one slice, loss, target and mode (from one shared gradient)."""

    checkpoint: str
    slice_id: str
    loss: str
    target: str
    mode: str
    eps: tuple[float, ...]
    mean_dsc: tuple[float, ...]
