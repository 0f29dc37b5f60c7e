"""The Checkpoints panel: every checkpoint found (``segadv_tui.catalog``), with its model, size, image size,
validation DSC and defence (adversarial training, from the metadata), and its training curves where its
history CSV is beside it (``core.training.history``)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from segadv_tui.catalog import CheckpointEntry
from segadv_tui.widgets.scores import sparkline

CURVE_EPOCHS = 12  # the latest epochs a curve shows: two of them fit the panel's line


class CheckpointList(OptionList):
    """Choosing an entry asks the explorer to load it; the loaded ones are marked."""

    class Chosen(Message):
        def __init__(self, entry: CheckpointEntry):
            super().__init__()
            self.entry = entry

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.entries: list[CheckpointEntry] = []
        self.loaded: set[Path] = set()
        self.current: Path | None = None
        self.scored_on: Path | None = None  # the model the frames are scored on, when not the current one

    def set_entries(self, entries: list[CheckpointEntry]) -> None:
        self.entries = list(entries)
        self._redraw()

    def mark(self, path: Path, *, current: bool) -> None:
        self.loaded.add(path)
        if current:
            self.current = path
        self._redraw()

    def unmark(self, path: Path) -> None:
        """``path`` is neither loaded nor attacked (a checkpoint refused after loading)."""
        self.loaded.discard(path)
        if self.current == path:
            self.current = None
        self._redraw()

    def mark_scored_on(self, path: Path | None) -> None:
        self.scored_on = path
        self._redraw()

    def _redraw(self) -> None:
        highlighted = self.highlighted
        self.clear_options()
        for entry in self.entries:
            # ▶ attacked, ◆ scored on (a transfer), ● loaded.
            marker = (
                "▶ "
                if entry.path == self.current
                else "◆ "
                if entry.path == self.scored_on
                else "● "
                if entry.path in self.loaded
                else "  "
            )
            # One line each for name and summary, cut with an ellipsis: the full error is in a notification.
            name = Text(
                marker + entry.path.stem, style="bold" if entry.meta else "bold red", no_wrap=True, overflow="ellipsis"
            )
            summary = Text(
                "  " + entry.summary, style="dim" if entry.meta else "red", no_wrap=True, overflow="ellipsis"
            )
            lines = [name, summary]
            if entry.defence:  # a line of its own: the summary line is full at the panel's width
                lines.append(Text("  " + entry.defence, style="dim italic", no_wrap=True, overflow="ellipsis"))
            if entry.history:
                lines.append(
                    Text("  " + training_curves(entry.history), style="dim", no_wrap=True, overflow="ellipsis")
                )
            self.add_option(Option(Group(*lines)))
        if self.entries:
            self.highlighted = min(highlighted or 0, len(self.entries) - 1)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(self.entries[event.option_index]))


def training_curves(history) -> str:
    """``loss ▇▅▃▂ 0.412 DSC ▁▄▆▇ 0.831``: train loss and validation mean DSC against epoch (the latest
    ``CURVE_EPOCHS``), each with its last value; n/a where the history lacks it."""
    from segadv_tui.render.tables import number

    parts = []
    for title, key in (("loss", "train_loss"), ("DSC", "val_dsc_mean")):
        values = [row.get(key, float("nan")) for row in history]
        last = values[-1] if values else None
        parts.append(f"{title} {sparkline(values, CURVE_EPOCHS)} {number(last, 3)}".replace("  ", " "))
    return f"{len(history)} ep · " + " ".join(parts)
