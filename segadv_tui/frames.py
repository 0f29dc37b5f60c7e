"""What the explorer asks its workers for and what they hand back, without torch: the slice at model
resolution, a frame request, the frame (an attack's result with its pictures), an iterative attack's
live step and the DSC-against-eps curve. The attack itself is one ``core.attacks.config.AttackConfig``.

The explorer imports these at start-up, before torch has loaded; :mod:`segadv_tui.attacker` computes them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.attacks.config import AttackConfig
from core.data.gitract import SliceRecord, read_slice, resize_image
from core.data.spacing import slice_spacing
from core.results import SliceResult
from segadv_tui.catalog import LoadedCheckpoint

# Eps values of the DSC-against-eps curve (FGSM from the shared gradient: one backward, then forwards).
CURVE_EPS = tuple(round(0.005 * i, 3) for i in range(11))


@dataclass(frozen=True)
class SliceData:
    """A slice at model resolution; ``truth`` is None for a lone PNG (no ground truth)."""

    id: str
    image: np.ndarray  # float32 (S, S) in [0, 1]
    truth: np.ndarray | None  # uint8 (3, S, S)
    spacing: np.ndarray | None = None  # (rows, columns) mm per pixel at S x S; None: unknown (a lone PNG)


def load_slice_data(source: SliceRecord | Path, img_size: int) -> SliceData:
    """A data set record (with its masks) or a lone PNG file (no ground truth), at model resolution."""
    if not isinstance(source, Path):
        image, masks = source.load(img_size)
        return SliceData(source.id, image, masks, slice_spacing([source], img_size)[0])
    return SliceData(Path(source).name, resize_image(read_slice(source), img_size), None)


class SliceCache:
    """Slices already read, by (slice, model resolution): stepping eps or switching the attack reads none
    again. The frame workers share it, hence the lock."""

    LIMIT = 256  # slices kept before the cache starts again

    def __init__(self):
        self._slices: dict[tuple[str, int], SliceData] = {}
        self._lock = threading.Lock()

    def get(self, source: SliceRecord | Path, img_size: int) -> SliceData:
        key = (str(getattr(source, "id", source)), img_size)
        with self._lock:
            cached = self._slices.get(key)
        if cached is None:
            cached = load_slice_data(source, img_size)
            with self._lock:
                if len(self._slices) > self.LIMIT:
                    self._slices.clear()
                self._slices[key] = cached
        return cached

    def of_frame(self, frame: Frame, img_size: int) -> SliceData:
        """The slice ``frame`` attacked, read from the cache or rebuilt from the frame's own pictures."""
        pictures = frame.result.pictures
        return self._slices.get((frame.slice_id, img_size)) or SliceData(
            frame.slice_id, pictures.image, pictures.reference.astype("uint8") if frame.has_truth else None
        )


@dataclass(frozen=True)
class FrameRequest:
    """What a frame worker computes: the attack on a slice, scored on ``scored_on`` when that is not the
    attacked model (a transfer). ``id`` increases with every request: only the latest one is shown."""

    id: int
    source: object  # SliceRecord or Path
    attack: AttackConfig
    scored_on: LoadedCheckpoint | None = None


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


@dataclass(frozen=True)
class CertifiedPicture:
    """One slice certified by randomized smoothing (``core.evaluation.certify``): per label the pixels
    certified positive at ``radius`` and the abstained ones, the certified DSC lower bound against the
    reference (the truth; without one, the model's clean prediction) and the share of pixels abstained."""

    slice_id: str
    checkpoint: str
    image: np.ndarray  # float32 (S, S)
    reference: np.ndarray  # bool (L, S, S)
    has_truth: bool
    positive: np.ndarray  # bool (L, S, S)
    abstained: np.ndarray  # bool (L, S, S)
    dsc_certified: np.ndarray  # (L,)
    dsc_base: np.ndarray  # (L,) the model on the clean slice
    abstain: np.ndarray  # (L,)
    sigma: float
    samples: int
    radius: float
    forward_passes: int
    seconds: float
