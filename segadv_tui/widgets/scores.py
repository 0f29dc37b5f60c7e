"""The Scores panel: DSC per label (UW-Madison's organs) and mean before and after the attack, and DSC
against eps. Its rows are the label set's, in order.

A label absent from the truth is scored by the empty-label rule, not by overlap (with the default rule
its DSC is 1 until one pixel of it is predicted, then 0), so a few stray pixels can halve a slice's mean:
its DSC cells carry a mark, and the line under the table says what the mark means.

With ``segadv-tui --metrics hd95,nsd`` the table has a column pair per boundary metric (in mm, clean and
adversarial; ``core.metrics``); without, it is as it always was.
"""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static

from core.evaluation.label_split import LabelSplit, label_split
from core.labels import UW_MADISON, LabelSet
from core.results import nanmean
from core.wording import label_noun
from segadv_tui.frames import Curve, Frame, LiveStep
from segadv_tui.render.tables import format_score, number, split_line

BARS = " ▁▂▃▄▅▆▇█"
# The boundary metrics' columns: (metric, key, header, decimals), clean then adversarial.
BOUNDARY_COLUMNS = {
    "hd95": (("hd95_clean", "HD95 cln", 1), ("hd95_adv", "HD95 adv", 1)),
    "nsd": (("nsd_clean", "NSD cln", 3), ("nsd_adv", "NSD adv", 3)),
}
ABSENT_MARK = "*"
# The footnote of the mark, per empty-organ policy (core.metrics): one line of the 49-column panel.
ABSENT_NOTES = {
    "one": "not in the {reference}: 1 if none predicted, else 0",
    "zero": "not in the {reference}: DSC 0 (empty counts 0)",
    "skip": "not in the {reference}: skipped (empty is n/a)",
}


def absent_organs(result) -> tuple[bool, ...]:
    """Per label, whether it is absent from the reference (the truth, or the target without one)."""
    if result.pictures is not None:
        return tuple(not organ.any() for organ in result.pictures.reference)
    if result.organ_pixels is not None:
        return tuple(int(count) == 0 for count in result.organ_pixels)
    return (False,) * len(result.labels)


def absent_note(frame: Frame | LiveStep) -> str:
    """The footnote line for ``frame``'s marks ("" when every organ is in the reference)."""
    if not any(absent_organs(frame.result)):
        return ""
    reference = "truth" if frame.result.pictures is None or frame.result.pictures.has_truth else "target"
    return f"{ABSENT_MARK} " + ABSENT_NOTES[frame.config.empty].format(reference=reference)


def strength(config) -> str:
    """``eps 0.009``, ``L2 eps 2.02``, ``severity 3``: how strong the frame's attack (or corruption) is."""
    if config.method == "corrupt":
        return f"severity {config.severity}"
    return f"eps {config.eps:.3f}" if config.norm == "linf" else f"L2 eps {config.eps:.2f}"


def scores_title(scored_on: str | None, split: str, room: int | None = None) -> str:
    """The Scores panel's title: "Scores" ("Scores on NAME" for a transfer, ``scored_on``), then the split
    (``split_line``). A transfer's title longer than ``room`` columns is the split, then "on NAME": a cut
    takes the model's name (which the summary line and the checkpoint list also show), not the numbers."""
    heading = "Scores" if scored_on is None else f"Scores on {scored_on}"
    if not split:
        return heading
    title = f"{heading} · {split}"
    if scored_on is None or room is None or len(title) <= room:
        return title
    return f"{split} · on {scored_on}"


class ScoresTable(DataTable):
    """Rows: the labels (keyed by name) and their mean; columns: DSC clean, DSC adversarial, attack success."""

    DEFAULT_CSS = "ScoresTable { height: auto; }"

    def __init__(self, metrics: tuple[str, ...] = ("dsc",), **kwargs):
        super().__init__(**kwargs)
        self.boundary = [column for metric in metrics for column in BOUNDARY_COLUMNS.get(metric, ())]
        self.labels = UW_MADISON  # until the data or the checkpoint says

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = True
        self._build()

    def _build(self) -> None:
        super().clear(columns=True)  # DataTable's: this table's clear() blanks the scores
        self.add_column(label_noun(self.labels).capitalize(), key="organ", width=12)
        for key, label in (("clean", "DSC clean"), ("adv", "DSC adv"), ("as", "AS")):
            self.add_column(Text(label, justify="right"), key=key, width=9)
        for key, label, _ in self.boundary:
            self.add_column(Text(label, justify="right"), key=key, width=9)
        for row, title in (*self.labels.titles.items(), ("mean", "Mean")):
            self.add_row(title, *(Text("… ", justify="right"),) * (3 + len(self.boundary)), key=row)

    def set_labels(self, labels: LabelSet) -> None:
        """One row per label of ``labels`` (a new label set: its rows, their scores unknown)."""
        if labels != self.labels:
            self.labels = labels
            self._build()

    def show(self, frame: Frame | LiveStep) -> None:
        result = frame.result
        self.set_labels(result.labels)
        success = result.attack_success
        names = result.labels.names
        absent = dict(zip(names, absent_organs(result)))
        values = {organ: (result.dsc_clean[i], result.dsc_adv[i], success[i]) for i, organ in enumerate(names)}
        values["mean"] = (result.mean_clean, result.mean_adv, result.mean_attack_success)
        for row, (clean, adv, success) in values.items():
            for column, value in (("clean", clean), ("adv", adv), ("as", success)):
                # The DSC the empty-organ rule decided carries the mark; the rest keep its column, so the
                # decimal points stay in line.
                mark = ABSENT_MARK if absent.get(row) and column != "as" else " "
                self.update_cell(row, column, Text(format_score(value) + mark, justify="right"))
        for key, _, digits in self.boundary:
            # Not measured (an iterative attack's live step): unknown until its frame comes.
            values = getattr(result, key)
            cells = {} if values is None else {name: values[i] for i, name in enumerate(names)}
            if values is not None:
                cells["mean"] = nanmean(np.asarray(values, dtype=np.float64)[None], axis=1)[0]
            for row in (*names, "mean"):
                text = number(cells[row], digits) + " " if row in cells else "– "
                self.update_cell(row, key, Text(text, justify="right"))

    def clear(self) -> None:
        """Every score back to unknown (nothing is shown for the current choice)."""
        for row in (*self.labels.names, "mean"):
            for column in ("clean", "adv", "as", *(key for key, _, _ in self.boundary)):
                self.update_cell(row, column, Text("– ", justify="right"))

    def cell_text(self, row: str, column: str) -> str:
        """The text shown in a cell, its mark included (for tests and the tmux check)."""
        return str(self.get_cell(row, column)).rstrip()


class DscCurve(Widget):
    """Mean DSC of FGSM against eps as vertical bars, the bar nearest the current eps highlighted."""

    DEFAULT_CSS = "DscCurve { height: 1fr; min-height: 3; }"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.curve: Curve | None = None
        self.eps = 0.0
        self.cleared = False

    def show(self, curve: Curve | None, eps: float) -> None:
        if (curve, eps) != (self.curve, self.eps) or self.cleared:  # an eps step has usually marked it already
            self.curve, self.eps, self.cleared = curve, eps, False
            self.refresh()

    def clear(self) -> None:
        """No curve, and none coming (nothing is shown for the current choice)."""
        self.curve, self.cleared = None, True
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size
        if self.curve is None:
            return Text("" if self.cleared else "sweeping eps…", style="dim")
        eps, values = self.curve.eps, self.curve.mean_dsc
        marked = min(range(len(eps)), key=lambda i: abs(eps[i] - self.eps))
        bar_width = max(1, min(6, (width - 6) // max(1, len(eps))))
        rows = max(1, height - 2)
        theme = self.app.current_theme
        bar_style, marked_style = theme.primary, f"bold {theme.accent or theme.warning or 'yellow'}"
        text = Text(no_wrap=True, overflow="crop")
        for line in range(rows):
            text.append("1.0 │" if line == 0 else ("0.0 │" if line == rows - 1 else "    │"), style="dim")
            for index, value in enumerate(values):
                eighths = 0 if not math.isfinite(value) else round(max(0.0, min(1.0, value)) * rows * 8)
                fill = min(8, max(0, eighths - (rows - 1 - line) * 8))
                # Bars three or more cells wide keep a one-cell gap so neighbours stay apart.
                drawn = bar_width - 1 if bar_width >= 3 else bar_width
                text.append(BARS[fill] * drawn, style=marked_style if index == marked else bar_style)
                text.append(" " * (bar_width - drawn))
            text.append("\n")
        plot_width = bar_width * len(eps)
        text.append("    └" + "─" * plot_width + "\n", style="dim")
        labels = list(f"     {eps[0]:g}".ljust(5 + plot_width))
        last = f"{eps[-1]:g}"
        labels[5 + plot_width - len(last) :] = last
        if self.eps <= eps[-1] + 1e-9:
            position = 5 + marked * bar_width + bar_width // 2
            note = f"▲ {self.eps:.3f}"
            if position + len(note) >= len(labels) - len(last):  # the marker wins over the last eps label
                labels[len(labels) - len(last) :] = " " * len(last)
            labels[position : position + len(note)] = note
        else:
            labels.extend(f"  ▶ {self.eps:.3f} (off the plot)")
        text.append("".join(labels), style="dim")
        return text


class ScoresPanel(Vertical):
    """The table and a line with the eps, the realised perturbation size and the step time; on its border,
    the slice's DSC split into damage to the labels present and labels hallucinated (``split_line``)."""

    DEFAULT_CSS = """
    ScoresPanel { height: 1fr; }
    ScoresPanel #scores-status, ScoresPanel #scores-live { height: 1; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, show_timings: bool = True, metrics: tuple[str, ...] = ("dsc",), **kwargs):
        super().__init__(**kwargs)
        self.show_timings = show_timings
        self.metrics = metrics
        self.note = ""  # the absent-organ footnote of the scores shown
        self.live_shown = False  # the second line shows an iterative run (its progress, then its history)
        self.scored_on: str | None = None  # the model scored on, in a transfer (None: the attacked one)
        self.split = ""  # the slice's DSC split by its sources (split_line)

    def compose(self) -> ComposeResult:
        yield ScoresTable(self.metrics, id="scores-table")
        yield Static("", id="scores-status")
        yield Static("", id="scores-live")

    def show(self, frame: Frame) -> None:
        self.query_one(ScoresTable).show(frame)
        self._show_split(label_split([frame.result]))
        step = f"step {frame.seconds * 1000:.0f} ms" if self.show_timings else "step –"
        linf_digits = 3 if frame.config.norm == "l2" else 4  # the longer L2 eps keeps the line in the panel
        self.query_one("#scores-status", Static).update(
            f"{strength(frame.config)} · L∞ {frame.result.linf:.{linf_digits}f} · L2 {frame.result.l2:.2f} · {step}",
            layout=False,
        )
        self._show_note(absent_note(frame))

    def show_live(self, live: LiveStep) -> None:
        """An iterative attack in progress: its iterate's scores, and per-step sparklines of mean DSC and loss."""
        self.query_one(ScoresTable).show(live)
        self._show_split(label_split([live.result]))
        self.note = absent_note(live)
        self.show_live_line(live)

    def show_live_line(self, live: LiveStep) -> None:
        """The second line: an iterative run's progress or history (its table marks keep their meaning in
        the help; the footnote returns with the next frame that is not iterative)."""
        self.live_shown = True
        line = self.query_one("#scores-live", Static)
        line.update(live_line(live, line.content_size.width or 46), layout=False)

    def clear_live(self) -> None:
        self.live_shown = False
        self._show_note(self.note)

    def clear(self) -> None:
        """Nothing to score: the table's cells unknown, no status, no footnote."""
        self.query_one(ScoresTable).clear()
        self._show_split(None)
        self.query_one("#scores-status", Static).update("", layout=False)
        self.live_shown = False
        self._show_note("")

    @property
    def heading(self) -> str:
        """The title before the split: "Scores", or "Scores on NAME" for a transfer."""
        return "Scores" if self.scored_on is None else f"Scores on {self.scored_on}"

    def set_scored_on(self, name: str | None) -> None:
        """The scores are ``name``'s masks (a transfer), or the attacked model's (None)."""
        self.scored_on = name
        self.set_class(name is not None, "-transfer")  # wider on a wide terminal (app.tcss)
        self._show_split(None, keep=True)

    def on_resize(self) -> None:
        self._show_split(None, keep=True)  # the title's order depends on its room

    def _show_split(self, split: LabelSplit | None, *, keep: bool = False) -> None:
        """The title: the heading, then the split of the scores shown (``keep``: the split shown before)."""
        if not keep:
            self.split = split_line(split)
        # The top border's corners take a column each; unknown before the first layout.
        room = self.size.width - 2 if self.size.width else None
        self.border_title = scores_title(self.scored_on, self.split, room)

    def _show_note(self, note: str) -> None:
        self.note = note
        if not self.live_shown:
            self.query_one("#scores-live", Static).update(Text(note, no_wrap=True, overflow="ellipsis"), layout=False)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values, width: int = 24) -> str:
    """The last ``width`` values as block characters, scaled to their own range (a flat run is mid-height)."""
    values = [v for v in values if math.isfinite(v)][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return SPARKS[3] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def live_line(live: LiveStep, width: int = 80) -> str:
    """``PGD 4/10 1.3s DSC ▇▆▅▄ 0.612 loss ▁▃▅▆``: where an iterative run is and how it went, the two
    per-step sparklines sharing what ``width`` leaves."""
    dsc = live.mean_dsc[-1] if live.mean_dsc else float("nan")
    head = f"{live.config.entry.title} {live.step}/{live.steps} {live.seconds:.1f}s DSC "
    middle = f" {format_score(dsc)} loss "
    room = max(2, (width - len(head) - len(middle)) // 2)
    return f"{head}{sparkline(live.mean_dsc, room)}{middle}{sparkline(live.loss, room)}"
