"""The explorer's layout by terminal size, without Textual: which CSS classes the screen takes (``app.tcss``
styles them) and whether the side panels show.

- wide (150 columns or more): the Scores panel of a transfer widens, so its title ("Scores on NAME" and
  the split of the DSC) fits;
- narrow (below 120 columns): the sidebar folds away (b shows it);
- short (below 36 rows): the grid keeps one row of the four essential pictures;
- compact (below 52 rows): the header's row goes to the pictures (the summary line names the device);
- tiny (below 26 rows): the scores table loses its status lines.

The Focus view hides the side panels until b shows them, whatever the width.
"""

from __future__ import annotations

WIDE_WIDTH = 150
NARROW_WIDTH = 120
SHORT_HEIGHT = 36
HEADER_HEIGHT = 52
TINY_HEIGHT = 26


def layout_classes(
    width: int, height: int, *, sidebar_forced: bool | None, focus_view: bool, focus_sidebar: bool
) -> dict[str, bool]:
    """CSS class -> whether the screen has it, for a ``width`` x ``height`` terminal. ``sidebar_forced``:
    the sidebar as b last left it outside Focus (None: by width); ``focus_sidebar``: as b left it in Focus."""
    narrow = width < NARROW_WIDTH
    show_sidebar = (not narrow) if sidebar_forced is None else sidebar_forced
    if focus_view:
        show_sidebar = focus_sidebar  # the picture as large as the terminal allows
    return {
        "-wide": width >= WIDE_WIDTH,
        "-narrow": narrow,
        "-short": height < SHORT_HEIGHT,
        "-compact": height < HEADER_HEIGHT,
        "-tiny": height < TINY_HEIGHT,
        "-no-sidebar": not show_sidebar,
    }
