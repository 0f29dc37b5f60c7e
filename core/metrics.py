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

from core.errors import check_choice
from core.names import EMPTY_POLICIES  # noqa: F401  (re-exported)
from core.results import attack_success, mean_dsc, nanmean  # noqa: F401  (re-exported)

_EMPTY_SCORE = {"one": 1.0, "skip": np.nan, "zero": 0.0}


def check_empty_policy(empty: str) -> str:
    return check_choice(empty, EMPTY_POLICIES, "empty-organ policy")


def _as_bool_tensor(masks, name: str, device=None) -> torch.Tensor:
    tensor = torch.as_tensor(masks)
    if tensor.ndim != 4:
        raise ValueError(f"{name} must have shape (N, organs, H, W), got {tuple(tensor.shape)}")
    return tensor.detach().to(device or "cpu").bool()


def dice_per_organ(pred, target, empty: str = "one") -> np.ndarray:
    """DSC of each organ of each slice, float64 (N, organs); NaN where ``empty="skip"`` skips.

    ``pred`` and ``target`` are bool-able masks (numpy or torch) of shape (N, organs, H, W). Torch masks
    are scored on their own device (a GPU does not wait for a copy of the masks); only the (N, organs)
    scores come back. The counts are whole numbers below 2**24, exact in float32 on any device.
    """
    check_empty_policy(empty)
    device = pred.device if isinstance(pred, torch.Tensor) else None
    pred_t = _as_bool_tensor(pred, "pred", device)
    target_t = _as_bool_tensor(target, "target", device)
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred {tuple(pred_t.shape)} and target {tuple(target_t.shape)} must have the same shape")
    pred_f, target_f = pred_t.flatten(2), target_t.flatten(2)
    intersection = (pred_f & target_f).sum(2).float()
    sizes = (pred_f.sum(2) + target_f.sum(2)).float()
    # A prediction where the truth is empty has no intersection: 0, under every policy.
    dsc = (2 * intersection / sizes.clamp(min=1)).double().cpu().numpy()
    dsc[(sizes == 0).cpu().numpy()] = _EMPTY_SCORE[empty]
    return dsc


def mean_dice_on_device(pred: torch.Tensor, target: torch.Tensor, empty: str = "one") -> torch.Tensor:
    """Mean over organs of ``dice_per_organ`` (NaN organs left out, all NaN gives NaN), float64 (N,),
    computed where the masks are: what an iterative attack compares at every step without a copy to
    the host. Bool-able torch masks (N, organs, H, W)."""
    check_empty_policy(empty)
    pred, target = pred.detach().bool().flatten(2), target.detach().bool().flatten(2)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    overlap = (pred & target).sum(2).double()
    total = (pred.sum(2) + target.sum(2)).double()
    dsc = torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.full_like(total, _EMPTY_SCORE[empty]))
    counted = ~torch.isnan(dsc)
    return torch.where(counted, dsc, 0).sum(1) / counted.sum(1)  # 0 / 0: NaN where every organ is skipped


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
