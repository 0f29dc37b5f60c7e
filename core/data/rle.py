"""The run-length encoding of the UW-Madison GI Tract ``train.csv``.

Hand-written because no library speaks this exact dialect: ``start length`` pairs, starts 1-indexed,
over the mask flattened row by row (C order) with shape (height, width). The competition text says
column-major; the real rows only decode to compact organs row-major (see shared/real-samples).
"""

from __future__ import annotations

import re

import numpy as np

from core.errors import SegadvError

# The most pixels segadv decodes a mask (or reads a slice) for: 4096 x 4096, 150 times the largest real
# slice (360 x 310), so a file name or header cannot command gigabytes.
MAX_PIXELS = 1 << 24
# Whole numbers in ASCII digits, at most 18 of them (any such number fits int64, with room for start + length).
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


class RLEError(SegadvError, ValueError):
    """A malformed run-length encoding; the message names the slice id and organ when known."""


def _where(slice_id: str | None, organ: str | None) -> str:
    parts = [p for p in (slice_id, organ) if p]
    return f" ({', '.join(parts)})" if parts else ""


def rle_decode(
    rle: str, height: int, width: int, *, slice_id: str | None = None, organ: str | None = None
) -> np.ndarray:
    """Decode ``rle`` into a uint8 0/1 mask of shape (height, width). Empty string -> empty mask."""
    if height <= 0 or width <= 0:
        raise RLEError(f"mask shape must be positive, got {height} x {width}{_where(slice_id, organ)}")
    if height * width > MAX_PIXELS:
        raise RLEError(
            f"mask shape {height} x {width} is more than the {MAX_PIXELS} pixels segadv decodes"
            f"{_where(slice_id, organ)}"
        )
    size = height * width
    mask = np.zeros(size, dtype=np.uint8)
    text = "" if rle is None else str(rle).strip()
    if not text or text.lower() == "nan":
        return mask.reshape(height, width)
    tokens = text.split()
    where = _where(slice_id, organ)
    if len(tokens) % 2:
        raise RLEError(f"RLE has an odd number of values ({len(tokens)}){where}")
    bad = next((t for t in tokens if not _INTEGER.fullmatch(t)), None)
    if bad is not None:
        if re.fullmatch(r"[+-]?[0-9]+", bad):
            raise RLEError(f"RLE has a value too large for any image ({len(bad)} digits){where}")
        raise RLEError(f"RLE value {bad[:20]!r} is not an integer{where}")
    values = np.array([int(t) for t in tokens], dtype=np.int64)
    starts, lengths = values[0::2], values[1::2]
    if (starts < 1).any():
        raise RLEError(f"RLE start {int(starts[starts < 1][0])} is below 1 (starts are 1-indexed){where}")
    if (lengths < 1).any():
        raise RLEError(f"RLE run length {int(lengths[lengths < 1][0])} is not positive{where}")
    ends = starts - 1 + lengths  # exclusive, 0-indexed
    if (ends > size).any():
        i = int(np.argmax(ends > size))
        raise RLEError(
            f"RLE run {int(starts[i])}+{int(lengths[i])} runs past the end of a {height} x {width} image{where}"
        )
    if len(starts) > 1 and (starts[1:] <= ends[:-1]).any():
        i = int(np.argmax(starts[1:] <= ends[:-1])) + 1
        raise RLEError(f"RLE runs are unsorted or overlap at run {i + 1} (start {int(starts[i])}){where}")
    # A slice has at most a few hundred runs: painting them one by one beats a full-image cumsum.
    for start, end in zip((starts - 1).tolist(), ends.tolist()):
        mask[start:end] = 1
    return mask.reshape(height, width)


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D 0/1 mask as row-major, 1-indexed ``start length`` pairs. Empty mask -> ``""``."""
    flat = np.asarray(mask).astype(bool).ravel(order="C")
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, stops = changes[0::2], changes[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts.tolist(), stops.tolist()))
