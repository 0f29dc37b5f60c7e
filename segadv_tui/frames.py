"""What the explorer asks for and what it shows (slices, frames, curves), without torch. The attack itself
is one ``core.attack_config.AttackConfig``; these are the UI's own pieces beside it.

The app imports these at start-up, before torch has loaded; :mod:`segadv_tui.explorer` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.attack_config import AttackConfig
from core.data import SliceRecord, load_slice, read_slice, resize_image
from core.results import SliceResult

EPS_STEP_FINE = 0.001
EPS_STEP_COARSE = 0.005
# Eps values of the DSC-against-eps curve (FGSM from the shared gradient: one backward, then forwards).
CURVE_EPS = tuple(round(0.005 * i, 3) for i in range(11))


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
class ScoringModel:
    """The model a transfer frame is scored on (a ``torch.nn.Module``), named by its checkpoint."""

    checkpoint: str
    model: object


@dataclass(frozen=True)
class Frame:
    """One computed view: the attack's result on the slice (with its pictures), for the request that
    asked for it; ``scored_on``: the checkpoint whose masks and scores these are, when not the attacked
    one (a transfer)."""

    request_id: int
    checkpoint: str
    config: AttackConfig
    result: SliceResult
    seconds: float
    scored_on: str | None = None

    @property
    def slice_id(self) -> str:
        return self.result.slice_id

    @property
    def has_truth(self) -> bool:
        return self.result.pictures.has_truth


@dataclass(frozen=True)
class LiveStep:
    """An iterative attack in progress: the iterate at ``step`` of ``steps`` scored (with its pictures),
    and the mean DSC and objective of every step so far (for the sparklines)."""

    request_id: int
    config: AttackConfig
    step: int
    steps: int
    seconds: float
    mean_dsc: tuple[float, ...]
    loss: tuple[float, ...]
    result: SliceResult


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
    scored_on: str | None = None  # the checkpoint scored, when not the attacked one
