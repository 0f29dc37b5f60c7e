"""Pixel spacing at model resolution: what turns pixel distances into mm for the boundary metrics.

Every data set's records carry ``spacing`` in mm per pixel in (width, height) order (UW-Madison: from the
file name; NIfTI: from the header) at their own ``width`` x ``height``; the models see them resized to a
square ``img_size``, which stretches each axis on its own. No torch: the explorer reads it at start-up.
"""

from __future__ import annotations

import numpy as np


def slice_spacing(records, img_size: int) -> np.ndarray:
    """mm per pixel of each record's slice resized to ``img_size`` x ``img_size``, float64 (N, 2) in array
    order (rows, columns), as MONAI takes it."""
    return np.array(
        [(r.spacing[1] * r.height / img_size, r.spacing[0] * r.width / img_size) for r in records], dtype=np.float64
    ).reshape(-1, 2)
