"""Segmentation scores: DSC per organ per slice, mean DSC, attack success, Hausdorff distance.

DSC is ``2|y ∩ ŷ| / (|y| + |ŷ|)`` on masks thresholded at sigmoid 0.5 (logit > 0): two sums in torch, the
same numbers as MONAI's ``compute_dice`` (the tests check), without importing MONAI, which costs the
explorer two seconds of start-up before its first frame. The Hausdorff distance is MONAI's, imported
when first used. What an organ absent from both truth and prediction scores is a policy, explicit
everywhere: ``one`` (the paper's code and the Kaggle winners: a correct "nothing here" is perfect),
``skip`` (NaN, left out of means) or ``zero``. A prediction where the truth is empty scores 0 under
every policy.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from core.names import EMPTY_POLICIES  # noqa: F401  (re-exported)

_EMPTY_SCORE = {"one": 1.0, "skip": np.nan, "zero": 0.0}


def check_empty_policy(empty: str) -> str:
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"unknown empty-organ policy {empty!r}; choose from {', '.join(EMPTY_POLICIES)}")
    return empty


def _as_bool_tensor(masks, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(masks)
    if tensor.ndim != 4:
        raise ValueError(f"{name} must have shape (N, organs, H, W), got {tuple(tensor.shape)}")
    return tensor.detach().to("cpu").bool()


def dice_per_organ(pred, target, empty: str = "one") -> np.ndarray:
    """DSC of each organ of each slice, float64 (N, organs); NaN where ``empty="skip"`` skips.

    ``pred`` and ``target`` are bool-able masks (numpy or torch) of shape (N, organs, H, W).
    """
    check_empty_policy(empty)
    pred_t = _as_bool_tensor(pred, "pred")
    target_t = _as_bool_tensor(target, "target")
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred {tuple(pred_t.shape)} and target {tuple(target_t.shape)} must have the same shape")
    pred_f, target_f = pred_t.flatten(2), target_t.flatten(2)
    intersection = (pred_f & target_f).sum(2).double()
    sizes = (pred_f.sum(2) + target_f.sum(2)).double()
    # A prediction where the truth is empty has no intersection: 0, under every policy.
    dsc = (2 * intersection / sizes.clamp(min=1)).numpy()
    dsc[(sizes == 0).numpy()] = _EMPTY_SCORE[empty]
    return dsc


def nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; all-NaN gives NaN without numpy's RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=axis)


def mean_dsc(per_organ) -> np.ndarray:
    """Mean DSC over organs of each slice, (N,); skipped (NaN) organs are left out, all skipped is NaN."""
    values = np.asarray(per_organ, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected per-organ scores of shape (N, organs), got {values.shape}")
    return nanmean(values, axis=1)


def attack_success(dsc_clean, dsc_adv) -> np.ndarray:
    """AS = (DSC_clean - DSC_adv) / DSC_clean, elementwise; NaN where DSC_clean is 0 or NaN (undefined)."""
    clean = np.asarray(dsc_clean, dtype=np.float64)
    adv = np.asarray(dsc_adv, dtype=np.float64)
    defined = np.isfinite(clean) & (clean != 0)
    safe_clean = np.where(defined, clean, 1.0)
    return np.where(defined, (clean - adv) / safe_clean, np.nan)


def format_attack_success(value: float, digits: int = 3) -> str:
    """How front ends show AS: undefined (clean DSC of 0) is "n/a"."""
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


@torch.no_grad()
def predict(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The model's organ masks, bool (N, 3, H, W): sigmoid > 0.5, i.e. logit > 0."""
    return model(image) > 0


def hausdorff_per_organ(pred, target, percentile: float | None = 95.0, spacing=None) -> np.ndarray:
    """(Percentile) Hausdorff distance of each organ of each slice, float64 (N, organs), in pixels or
    in ``spacing`` units; NaN where the truth or the prediction is empty (the distance is undefined)."""
    pred_t = _as_bool_tensor(pred, "pred")
    target_t = _as_bool_tensor(target, "target")
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred {tuple(pred_t.shape)} and target {tuple(target_t.shape)} must have the same shape")
    result = np.full(pred_t.shape[:2], np.nan)
    defined = (pred_t.flatten(2).any(2) & target_t.flatten(2).any(2)).numpy()
    if defined.any():
        from monai.metrics import compute_hausdorff_distance

        # MONAI warns about the empty organs (masked out below) and about its own deprecations.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            distances = compute_hausdorff_distance(
                pred_t.float(), target_t.float(), include_background=True, percentile=percentile, spacing=spacing
            )
        result[defined] = distances.double().numpy()[defined]
    return result
