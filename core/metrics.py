"""Segmentation scores: DSC per organ per slice, mean DSC, attack success, and the boundary metrics HD95 and NSD.

DSC is ``2|y ∩ ŷ| / (|y| + |ŷ|)`` on masks thresholded at sigmoid 0.5 (logit > 0): two sums in torch, the
same numbers as MONAI's ``compute_dice`` (the tests check), without importing MONAI, which costs the
explorer two seconds of start-up before its first frame. The Hausdorff distance is MONAI's, imported
when first used. What an organ absent from both truth and prediction scores is a policy, explicit
everywhere: ``one`` (the paper's code and the Kaggle winners: a correct "nothing here" is perfect),
``skip`` (NaN, left out of means) or ``zero``. A prediction where the truth is empty scores 0 under
every policy.

Boundary metrics, in mm (MONAI's ``compute_hausdorff_distance`` and ``compute_surface_dice``), per label
per slice, from the pixel spacing of each slice at model resolution (``slice_spacing``: the file's spacing
scaled by original / resized size on each axis, in MONAI's (rows, columns) order; ``core.data.spacing``):

- HD95, the 95th-percentile symmetric Hausdorff distance between the boundaries. Empty labels follow the
  DSC policy, with the image diagonal in mm (the farthest two pixels of the slice can be apart) as the
  worst distance: empty in both scores 0 mm under ``one``, NaN under ``skip``, the diagonal under
  ``zero``; empty in exactly one of truth and prediction scores the diagonal under every policy (as DSC
  scores 0), so a missed or hallucinated organ weighs in the mean as the worst miss, not as nothing.
- NSD, the normalised surface Dice (Nikolov et al. 2021): the share of both boundaries lying within
  ``tolerance`` mm of the other, in [0, 1]. Empty labels follow DSC exactly: empty in both scores the
  policy value (1, NaN, 0), empty in one scores 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from core.data.spacing import slice_spacing  # noqa: F401  (re-exported)
from core.errors import OptionError, check_choice
from core.names import DEFAULT_NSD_TOLERANCE, EMPTY_POLICIES, METRIC_NAMES  # noqa: F401  (re-exported)
from core.results import attack_success, mean_dsc, nanmean  # noqa: F401  (re-exported)

_EMPTY_SCORE = {"one": 1.0, "skip": np.nan, "zero": 0.0}


def check_empty_policy(empty: str) -> str:
    return check_choice(empty, EMPTY_POLICIES, "empty-organ policy")


def empty_score(empty: str) -> float:
    """What a label empty in both truth and prediction scores under the policy ``empty``: 1, NaN or 0."""
    return _EMPTY_SCORE[check_empty_policy(empty)]


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
    dsc[(sizes == 0).cpu().numpy()] = empty_score(empty)
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
    dsc = torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.full_like(total, empty_score(empty)))
    counted = ~torch.isnan(dsc)
    return torch.where(counted, dsc, 0).sum(1) / counted.sum(1)  # 0 / 0: NaN where every organ is skipped


def hausdorff_per_organ(pred, target, percentile: float | None = 95.0, spacing=None) -> np.ndarray:
    """(Percentile) Hausdorff distance of each organ of each slice, float64 (N, organs), in pixels or
    in ``spacing`` units (one (rows, columns) pair, or one per slice); NaN where the truth or the
    prediction is empty (the distance is undefined)."""
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


def check_nsd_tolerance(tolerance: float) -> float:
    value = float(tolerance)
    if not (np.isfinite(value) and value >= 0):
        raise OptionError(f"the NSD tolerance must be a number of mm of at least 0, got {tolerance}")
    return value


def _spacing_per_slice(spacing, n: int) -> np.ndarray:
    """``spacing`` (None: 1 pixel; one (rows, columns) pair; or one pair per slice) as float64 (n, 2)."""
    if spacing is None:
        return np.ones((n, 2))
    values = np.asarray(spacing, dtype=np.float64)
    values = np.broadcast_to(values, (n, 2)) if values.shape == (2,) else values
    if values.shape != (n, 2):
        raise ValueError(f"expected a (rows, columns) spacing or one per slice ({n}), got shape {values.shape}")
    return values


def _presence(pred_t: torch.Tensor, target_t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(empty in both, empty in exactly one), bool (N, organs)."""
    pred_any, target_any = pred_t.flatten(2).any(2).numpy(), target_t.flatten(2).any(2).numpy()
    return ~pred_any & ~target_any, pred_any ^ target_any


def hd95_per_organ(pred, target, spacing=None, empty: str = "one") -> np.ndarray:
    """HD95 of each label of each slice in mm, float64 (N, organs), with the module's empty policy.
    ``spacing``: (rows, columns) mm per pixel, one pair or one per slice (``slice_spacing``); None: pixels."""
    check_empty_policy(empty)
    pred_t, target_t = _as_bool_tensor(pred, "pred"), _as_bool_tensor(target, "target")
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred {tuple(pred_t.shape)} and target {tuple(target_t.shape)} must have the same shape")
    spacing_mm = _spacing_per_slice(spacing, pred_t.shape[0])
    distances = hausdorff_per_organ(pred_t, target_t, 95.0, spacing=spacing_mm.tolist())
    # The farthest apart two pixel centres of a slice can be: the worst distance a slice can score.
    diagonal = np.hypot(*((np.array(pred_t.shape[2:]) - 1) * spacing_mm).T)[:, None]
    both_empty, one_empty = _presence(pred_t, target_t)
    worst = np.broadcast_to(diagonal, distances.shape)
    distances[one_empty] = worst[one_empty]
    both = {"one": np.zeros_like(distances), "skip": np.full_like(distances, np.nan), "zero": worst}[empty]
    distances[both_empty] = both[both_empty]
    return distances


def nsd_per_organ(pred, target, tolerance: float, spacing=None, empty: str = "one") -> np.ndarray:
    """Normalised surface Dice of each label of each slice at ``tolerance`` mm, float64 (N, organs), with
    the module's empty policy. ``spacing`` as for ``hd95_per_organ``."""
    check_empty_policy(empty)
    tolerance = check_nsd_tolerance(tolerance)
    pred_t, target_t = _as_bool_tensor(pred, "pred"), _as_bool_tensor(target, "target")
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred {tuple(pred_t.shape)} and target {tuple(target_t.shape)} must have the same shape")
    spacing_mm = _spacing_per_slice(spacing, pred_t.shape[0])
    both_empty, one_empty = _presence(pred_t, target_t)
    result = np.zeros(pred_t.shape[:2])
    if (~both_empty & ~one_empty).any():
        from monai.metrics import compute_surface_dice

        with warnings.catch_warnings():  # MONAI warns about the empty labels, scored below
            warnings.simplefilter("ignore")
            result = (
                compute_surface_dice(
                    pred_t.float(),
                    target_t.float(),
                    class_thresholds=[tolerance] * pred_t.shape[1],
                    include_background=True,
                    spacing=spacing_mm.tolist(),
                )
                .double()
                .numpy()
            )
    result[one_empty] = 0.0
    result[both_empty] = empty_score(empty)
    return result
