"""Our own half-block renderer: an RGB picture as terminal cells, two pixels per cell, truecolor.

Written by hand because it must work everywhere (SSH, tmux, tests, textual-serve's browser tab) and be
fast enough to redraw the pictures on every epsilon step: each cell is '▀' with the top pixel as
foreground and the bottom pixel as background, so a cell (about 1:2 in shape) shows two square pixels.
Resizing (one summed-area pass), colour packing and run-length merging are numpy; the only Python
loop is over runs of equal cells, and their Style objects are cached.

Kept over textual-image's half-cell renderer, which does the same job, because it is faster at the
explorer's sizes: ``benchmarks/bench_tui.py`` measures 3.5 to 9 times less time per picture (for
example 2.8 ms against 13.6 ms for an overlay into 80 x 40 cells). textual-image resizes through
Pillow on every render and yields one Segment, with new Color and Style objects, per cell; here equal
neighbours share one Segment, which also leaves Textual's compositor fewer segments to cut and the
terminal fewer escape codes to parse. The explorer also keeps the packed cells of its last drawing and
rebuilds only the rows that changed (``segadv_tui.widgets.picture``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from segadv_tui.render.imagery import resize_rgb  # noqa: F401  (re-exported: the renderer's resampling)

UPPER_HALF = "▀"


def fit_cells(height: int, width: int, max_cols: int, max_rows: int) -> tuple[int, int]:
    """The largest (cols, rows) box inside (max_cols, max_rows) that keeps the picture's aspect ratio.

    One column is one pixel wide and one row two pixels tall, so pixels come out square.
    """
    if height <= 0 or width <= 0 or max_cols <= 0 or max_rows <= 0:
        return 0, 0
    scale = min(max_cols / width, 2 * max_rows / height)
    cols = max(1, min(max_cols, int(width * scale)))
    rows = max(1, min(max_rows, int(round(height * scale / 2))))
    return cols, rows


@lru_cache(maxsize=65536)
def _cell_style(packed: int) -> Style:
    """The Style of a cell whose top pixel is the high 24 bits of ``packed``, bottom the low 24."""
    top, bottom = packed >> 24, packed & 0xFFFFFF
    return Style(
        color=Color.from_rgb(top >> 16, (top >> 8) & 0xFF, top & 0xFF),
        bgcolor=Color.from_rgb(bottom >> 16, (bottom >> 8) & 0xFF, bottom & 0xFF),
    )


def pack_cells(rgb: np.ndarray) -> np.ndarray:
    """(2R, C, 3) uint8 -> (R, C) int64: top pixel's colour << 24 | bottom pixel's colour."""
    colour = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    return (colour[0::2] << 24) | colour[1::2]


def cell_rows(rgb: np.ndarray, cols: int, rows: int) -> list[list[Segment]]:
    """``rgb`` resized to exactly (cols, rows) cells, as one list of Segments per row.

    Adjacent cells of equal colours are merged into one Segment.
    """
    if cols <= 0 or rows <= 0:
        return []
    return [row_segments(row) for row in pack_cells(resize_rgb(rgb, 2 * rows, cols))]


def row_segments(cells: np.ndarray) -> list[Segment]:
    """One row of packed cells (see ``pack_cells``) as Segments, runs of equal cells merged."""
    # Run starts: column 0 and wherever a cell differs from its left neighbour.
    change = np.ones(cells.shape, dtype=bool)
    change[1:] = cells[1:] != cells[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, cells.shape[0]))
    return [Segment(UPPER_HALF * n, _cell_style(v)) for v, n in zip(cells[starts].tolist(), lengths.tolist())]


def render_strips(rgb: np.ndarray, max_cols: int, max_rows: int, background: Style | None = None) -> list[Strip]:
    """``rgb`` fitted into (max_cols, max_rows) cells with its aspect ratio kept, centred, as Strips.

    Every Strip is exactly ``max_cols`` cells wide and there are ``max_rows`` of them; the margins are
    blank cells in ``background``.
    """
    if max_cols <= 0 or max_rows <= 0:
        return []
    rgb = np.asarray(rgb)
    cols, rows = fit_cells(rgb.shape[0], rgb.shape[1], max_cols, max_rows)
    blank = Strip([Segment(" " * max_cols, background)], max_cols)
    left = (max_cols - cols) // 2
    right = max_cols - cols - left
    top = (max_rows - rows) // 2
    strips = [blank] * top
    pad_left = [Segment(" " * left, background)] if left else []
    pad_right = [Segment(" " * right, background)] if right else []
    for line in cell_rows(rgb, cols, rows):
        strips.append(Strip(pad_left + line + pad_right, max_cols))
    strips.extend([blank] * (max_rows - len(strips)))
    return strips
