"""The one per-slice result of an attack, and the scores derived from it, without torch.

``SliceResult`` travels the whole way: ``core.evaluation`` makes them, the CLI
writes their JSON / CSV forms, the explorer shows one per frame. A new score is a field here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import overload

import numpy as np

from core.files import json_number
from core.labels import UW_MADISON, LabelSet


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; all-NaN gives NaN without numpy's RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=axis)


def mean_dsc(per_label) -> np.ndarray:
    """Mean DSC over labels of each slice, (N,); skipped (NaN) labels are left out, all skipped is NaN."""
    values = np.asarray(per_label, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected per-label scores of shape (N, labels), got {values.shape}")
    return nanmean(values, axis=1)


def attack_success(dsc_clean, dsc_adv) -> np.ndarray:
    """AS = (DSC_clean - DSC_adv) / DSC_clean, elementwise; NaN where DSC_clean is 0 or NaN (undefined)."""
    clean = np.asarray(dsc_clean, dtype=np.float64)
    adv = np.asarray(dsc_adv, dtype=np.float64)
    defined = np.isfinite(clean) & (clean != 0)
    safe_clean = np.where(defined, clean, 1.0)
    return np.where(defined, (clean - adv) / safe_clean, np.nan)


@overload
def label_dict(values: None, names: tuple[str, ...]) -> None: ...
@overload
def label_dict(values: Iterable, names: tuple[str, ...]) -> dict[str, float | None]: ...
def label_dict(values: Iterable | None, names: tuple[str, ...]) -> dict[str, float | None] | None:
    """Per-label values as ``{label name: number or None}`` in label order (None stays None: not measured)."""
    if values is None:
        return None
    return {name: json_number(v) for name, v in zip(names, values)}


@dataclass(frozen=True)
class SlicePictures:
    """What a slice's attack looks like, at model resolution (numpy): for the explorer and figures.

    image / adversarial: float32 (S, S) in [0, 1]; clean_prediction / adversarial_prediction: bool (L, S, S),
    one channel per label; reference: bool (L, S, S), the ground truth or, without one, the clean prediction."""

    image: np.ndarray
    adversarial: np.ndarray
    clean_prediction: np.ndarray
    adversarial_prediction: np.ndarray
    reference: np.ndarray
    has_truth: bool


@dataclass(frozen=True)
class SliceResult:
    """One slice attacked once at ``eps``, scored against its reference.

    dsc_clean / dsc_adv: float64 (L,) per label of ``labels``, NaN where the empty policy skips; linf / l2:
    the realised perturbation norms; has_organs: the reference holds any label (the JSON key UW-Madison's
    files have always had); zero_grad_fraction: FGSM's share of pixels with a zero gradient (None for other
    methods); hd95_* / nsd_*: (L,) in mm / at the config's tolerance in mm, when measured; organ_pixels: int (L,) pixels
    of each label in the reference
    (for scores by size); member: the ensemble member that won the slice; pictures: only where asked (one
    slice in the explorer); labels: the label set the per-label values follow (the model's); predicted_clean /
    predicted_adv: bool (L,), whether each label appears in the clean / adversarial prediction (for damage
    vs hallucination, ``core.evaluation.label_split``)."""

    slice_id: str
    eps: float
    dsc_clean: np.ndarray
    dsc_adv: np.ndarray
    linf: float
    l2: float
    has_organs: bool = True
    scored: bool = True
    zero_grad_fraction: float | None = None
    hd95_clean: np.ndarray | None = None
    hd95_adv: np.ndarray | None = None
    nsd_clean: np.ndarray | None = None
    nsd_adv: np.ndarray | None = None
    organ_pixels: np.ndarray | None = None
    member: str | None = None
    pictures: SlicePictures | None = None
    labels: LabelSet = UW_MADISON
    predicted_clean: np.ndarray | None = None
    predicted_adv: np.ndarray | None = None

    @property
    def mean_clean(self) -> float:
        return float(mean_dsc(self.dsc_clean[None])[0])

    @property
    def mean_adv(self) -> float:
        return float(mean_dsc(self.dsc_adv[None])[0])

    @property
    def attack_success(self) -> np.ndarray:
        return attack_success(self.dsc_clean, self.dsc_adv)

    @property
    def mean_attack_success(self) -> float:
        return float(attack_success(self.mean_clean, self.mean_adv))

    def to_dict(self) -> dict:
        """The JSON form, per-label values keyed by label name: None where a score is undefined or was not
        measured (NSD: absent); no pictures."""
        names = self.labels.names
        data = {
            "slice_id": self.slice_id,
            "eps": self.eps,
            "has_organs": self.has_organs,
            "scored": self.scored,
            "dsc_clean": label_dict(self.dsc_clean, names),
            "dsc_adv": label_dict(self.dsc_adv, names),
            "mean_clean": json_number(self.mean_clean),
            "mean_adv": json_number(self.mean_adv),
            "attack_success": label_dict(self.attack_success, names),
            "mean_attack_success": json_number(self.mean_attack_success),
            "linf": float(self.linf),
            "l2": float(self.l2),
            "zero_grad_fraction": json_number(self.zero_grad_fraction),
            "hd95_clean": label_dict(self.hd95_clean, names),
            "hd95_adv": label_dict(self.hd95_adv, names),
            "organ_pixels": None
            if self.organ_pixels is None
            else {o: int(v) for o, v in zip(names, self.organ_pixels)},
            "member": self.member,
        }
        if self.nsd_clean is not None:
            data |= {"nsd_clean": label_dict(self.nsd_clean, names), "nsd_adv": label_dict(self.nsd_adv, names)}
        return data
