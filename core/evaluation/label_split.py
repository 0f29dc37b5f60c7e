"""Robust DSC split by its two sources: damage to the labels present in the truth, and hallucination of the
labels absent from it.

A label absent from a slice's truth scores DSC 1 until one pixel of it is predicted, then 0 (the default
empty policy), so a mean DSC mixes erased organs and a few hallucinated pixels. Over the scored slices:

- damage: the mean DSC over the (slice, label) pairs whose label is present in the reference;
- hallucination: the share of the (slice, label) pairs whose label is absent from the reference and
  appears (at least one pixel) in the prediction.

Both for the clean and the adversarial prediction. No torch: from ``core.results.SliceResult`` fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.results import SliceResult, json_number, nanmean


@dataclass(frozen=True)
class LabelSplit:
    present_pairs: int
    absent_pairs: int
    damage_clean: float | None  # mean DSC over present (slice, label) pairs
    damage_adv: float | None
    hallucination_clean: float | None  # share of absent (slice, label) pairs predicted
    hallucination_adv: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def label_split(rows: Sequence[SliceResult]) -> LabelSplit | None:
    """The split over the scored ``rows``; None when a row lacks what it needs (reference pixels, predicted
    labels)."""
    scored = [r for r in rows if r.scored]
    if any(r.organ_pixels is None or r.predicted_clean is None or r.predicted_adv is None for r in scored):
        return None
    if not scored:
        return LabelSplit(0, 0, None, None, None, None)
    present = np.stack([np.asarray(r.organ_pixels) > 0 for r in scored])
    dsc_clean = np.stack([r.dsc_clean for r in scored])[present]
    dsc_adv = np.stack([r.dsc_adv for r in scored])[present]
    shown_clean = np.stack([np.asarray(r.predicted_clean) for r in scored])[~present]
    shown_adv = np.stack([np.asarray(r.predicted_adv) for r in scored])[~present]

    def mean(values: np.ndarray) -> float | None:
        return json_number(nanmean(values.astype(np.float64), axis=0)) if values.size else None

    return LabelSplit(
        present_pairs=int(present.sum()),
        absent_pairs=int((~present).sum()),
        damage_clean=mean(dsc_clean),
        damage_adv=mean(dsc_adv),
        hallucination_clean=mean(shown_clean),
        hallucination_adv=mean(shown_adv),
    )
