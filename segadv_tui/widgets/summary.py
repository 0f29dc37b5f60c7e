"""The summary line over the pictures: what the explorer attacks and how, in its long wording where the
line holds it and in its short one where it does not (an 80-column terminal, or the sidebar beside it),
so the eps, the method, the slice and the checkpoint stay in view. What still does not fit ends in "…"."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class SummaryLine(Static):
    """One line of Rich markup, chosen from a long and a short wording by the room the line has."""

    def __init__(self, text: str, **kwargs):
        super().__init__(text, **kwargs)
        self.wordings = (text, text)

    def show(self, long: str, short: str | None = None) -> None:
        """``long`` where it fits, else ``short`` (None: ``long`` is the only wording)."""
        self.wordings = (long, long if short is None else short)
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        long, short = self.wordings
        room = self.content_size.width  # 0 before the first layout: the long wording until then
        fits = not room or Text.from_markup(long).cell_len <= room
        self.update(long if fits else short, layout=False)  # one fixed line: no re-layout
