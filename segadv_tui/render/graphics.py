"""Which picture renderer ``segadv-tui`` uses: chosen before start-up, so this module stays light."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable

GRAPHICS = ("auto", "halfblock", "kitty", "sixel")


def choose_graphics(
    requested: str,
    environ=os.environ,
    isatty: bool | None = None,
    ask_terminal: Callable[[], str | None] | None = None,
) -> str:
    """The picture renderer for ``--graphics``. auto: half-block unless the terminal surely draws images:
    kitty by its environment; inside tmux, what the terminal answers through tmux (``ask_terminal``,
    default :func:`terminal_graphics`; see :func:`tmux_graphics`)."""
    if requested != "auto":
        return requested
    isatty = sys.stdout.isatty() if isatty is None else isatty
    if not isatty or environ.get("PYTEST_CURRENT_TEST"):  # tests: no terminal to draw images
        return "halfblock"
    if environ.get("TMUX"):
        return tmux_graphics((ask_terminal or terminal_graphics)(), passes_through_tmux())
    # Outside tmux only kitty is told by its environment; other terminals are not asked (a terminal that
    # does not answer would swallow the user's first key).
    if environ.get("TERM") == "xterm-kitty" or environ.get("KITTY_WINDOW_ID"):
        return "kitty"
    return "halfblock"


def tmux_graphics(answered: str | None, passthrough: bool) -> str:
    """The renderer inside tmux, from what the terminal answered textual-image's queries through tmux:
    sixel where tmux said it draws sixels (tmux 3.4 and later draw them themselves, where told that the
    outer terminal has them: ``terminal-features ',*:sixel'``); kitty where the outer terminal answered
    the kitty query and textual-image wraps its images in tmux's passthrough (``passthrough``: its
    0.13 and later, with tmux's ``allow-passthrough on``), since tmux drops unwrapped ones; else half-blocks."""
    if answered == "sixel":
        return "sixel"
    if answered == "kitty" and passthrough:
        return "kitty"
    return "halfblock"


def terminal_graphics() -> str | None:
    """What the terminal answered textual-image's queries (sent as it is imported, before the app starts):
    "sixel", "kitty" or None (neither, or no answer in textual-image's 0.1 s)."""
    try:
        from textual_image import renderable
    except Exception:  # noqa: BLE001  a terminal query can fail in many ways; half-block always works
        return None
    if renderable.Image is renderable.SixelImage:
        return "sixel"
    if renderable.Image is renderable.TGPImage:
        return "kitty"
    return None


def passes_through_tmux() -> bool:
    """Whether the installed textual-image wraps its kitty images in tmux's passthrough (its 0.13 on)."""
    try:
        return importlib.util.find_spec("textual_image._tmux") is not None
    except (ImportError, ValueError):
        return False


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
