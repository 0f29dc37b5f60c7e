"""Which picture renderer ``segadv-tui`` uses: chosen before start-up, so this module stays light."""

from __future__ import annotations

import os
import sys

GRAPHICS = ("auto", "halfblock", "kitty", "sixel")


def choose_graphics(requested: str, environ=os.environ, isatty: bool | None = None) -> str:
    """The picture renderer for ``--graphics``: auto is half-block unless the terminal is surely kitty."""
    if requested != "auto":
        return requested
    isatty = sys.stdout.isatty() if isatty is None else isatty
    # Conservative: tmux and tests swallow or mangle graphics escapes; only kitty is detected reliably.
    if not isatty or environ.get("TMUX") or environ.get("PYTEST_CURRENT_TEST"):
        return "halfblock"
    if environ.get("TERM") == "xterm-kitty" or environ.get("KITTY_WINDOW_ID"):
        return "kitty"
    return "halfblock"


def register_graphics(renderer: str) -> str:
    """Import textual-image's widget for ``renderer`` (its import queries the terminal, so before start-up)."""
    if renderer == "halfblock":
        return renderer
    from segadv_tui.widgets.picture import GRAPHICS_WIDGETS

    try:
        from textual_image.widget import SixelImage, TGPImage
    except Exception as exc:  # a terminal query can fail in many ways; half-block always works
        print(f"segadv-tui: {renderer} graphics unavailable ({exc}); using half-block", file=sys.stderr)
        return "halfblock"
    GRAPHICS_WIDGETS[renderer] = TGPImage if renderer == "kitty" else SixelImage
    return renderer
