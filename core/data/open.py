"""Open a data folder in whichever layout it holds: ``dataset.json`` (the Medical Segmentation Decathlon /
nnU-Net raw layout, ``core.data.decathlon``) or ``train.csv`` (UW-Madison GI Tract, ``core.data.gitract``).

Every data set it returns has the same protocol: ``root``, ``labels``, ``layout``, ``records`` (each with
``id``, ``case``, ``width``, ``height``, ``spacing``, ``has_labels`` and ``load(img_size)``),
``__iter__``, ``__len__``, ``by_id``, ``split(test_fraction, seed)`` by case, ``fingerprint()``,
``skipped`` and ``problems``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from core.data import decathlon, gitract
from core.data.gitract import DataError

LAYOUTS = ("decathlon", "uw-madison")


def data_layout(root: str | Path) -> str:
    """``decathlon`` for a folder holding dataset.json, ``uw-madison`` for one holding train.csv; a
    ``DataError`` naming both layouts for a folder that holds neither."""
    root = Path(root)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data folder {root} {state} (expected {_both()})")
    if (root / "dataset.json").is_file():
        return "decathlon"
    if (root / "train.csv").is_file():
        return "uw-madison"
    raise DataError(f"{root} holds neither dataset.json nor train.csv (expected {_both()})")


def open_dataset(
    root: str | Path | None = None,
    *,
    exclude: Iterable[str] | None = None,
    progress=None,
    slice_axis: int = decathlon.DEFAULT_SLICE_AXIS,
    kind: str | None = None,
):
    """The data set at ``root`` in its layout (``data_layout``), or the built-in demo (generated on first
    use, reporting ``progress``). ``exclude`` names what to leave out: case-days for UW-Madison (default:
    the two known faulty ones), cases for a Decathlon folder (default: none). ``slice_axis`` and ``kind``
    (sigmoid or softmax; default softmax) apply to a Decathlon folder only."""
    if root is None:
        return gitract.open_dataset(None, progress=progress)
    if data_layout(root) == "decathlon":
        return decathlon.DecathlonDataset(root, slice_axis=slice_axis, kind=kind, exclude=exclude or ())
    return gitract.GITractDataset(root, exclude=gitract.EXCLUDED_CASE_DAYS if exclude is None else exclude)


def _both() -> str:
    return f"the Decathlon / nnU-Net layout: {decathlon.LAYOUT}; or the UW-Madison layout: {gitract.LAYOUT}"
