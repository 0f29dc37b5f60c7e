"""How a figure file is made: its format (from the file's extension), its width (one or two journal
columns) and, for PNG, its resolution.

No matplotlib here: the commands check these before any work, and ``segadv --help`` lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import OptionError

FIGURE_FORMATS = ("pdf", "svg", "png")
# Inches: the text width of one and of two columns in the common journal templates (IEEE, Elsevier, Springer).
COLUMN_WIDTHS = {"single": 3.5, "double": 7.2}
DEFAULT_WIDTH = "double"
DEFAULT_DPI = 300
DPI_LIMITS = (50, 1200)  # below, text is unreadable; above, a double-column PNG passes 100 megapixels


@dataclass(frozen=True)
class FigureStyle:
    """The width (a key of ``COLUMN_WIDTHS``) and the PNG resolution of a figure."""

    width: str = DEFAULT_WIDTH
    dpi: int = DEFAULT_DPI

    def __post_init__(self) -> None:
        if self.width not in COLUMN_WIDTHS:
            raise OptionError(f"unknown figure width {self.width!r}; choose from {', '.join(COLUMN_WIDTHS)}")
        if not DPI_LIMITS[0] <= self.dpi <= DPI_LIMITS[1]:
            raise OptionError(f"--dpi {self.dpi}: choose a resolution from {DPI_LIMITS[0]} to {DPI_LIMITS[1]}")

    @property
    def inches(self) -> float:
        return COLUMN_WIDTHS[self.width]

    @property
    def single(self) -> bool:
        return self.width == "single"


def figure_style(width: str, dpi: int) -> FigureStyle:
    """The style the options ``--width`` (any case) and ``--dpi`` ask for; an ``OptionError`` naming a bad one."""
    return FigureStyle(width.strip().lower(), dpi)


def figure_format(path: str | os.PathLike, option: str = "--out") -> str:
    """``pdf``, ``svg`` or ``png``, from ``path``'s extension (any case); a name without one (``-``, a FIFO)
    gets PNG, as before there was a choice. Any other extension: an ``OptionError`` naming the path."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    if suffix not in FIGURE_FORMATS:
        raise OptionError(
            f"{option} {str(path)!r}: unknown figure format '.{suffix}'"
            f"; use {', '.join('.' + f for f in FIGURE_FORMATS)}"
        )
    return suffix
