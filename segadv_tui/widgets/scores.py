"""The Scores panel: DSC per organ and mean before and after the attack, and DSC against eps."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static

from core.organs import ORGAN_TITLES, ORGANS
from segadv_tui.settings import Curve, Frame, LiveStep
from segadv_tui.render.tables import format_score

BARS = " ▁▂▃▄▅▆▇█"
ROWS = tuple(ORGANS) + ("mean",)
ROW_TITLES = {**ORGAN_TITLES, "mean": "Mean"}


class ScoresTable(DataTable):
    """Rows: organs and their mean; columns: DSC clean, DSC adversarial, attack success."""

    DEFAULT_CSS = "ScoresTable { height: auto; }"

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = True
        self.add_column("Organ", key="organ", width=12)
        for key, label in (("clean", "DSC clean"), ("adv", "DSC adv"), ("as", "AS")):
            self.add_column(Text(label, justify="right"), key=key, width=9)
        for row in ROWS:
            self.add_row(ROW_TITLES[row], *(Text("…", justify="right"),) * 3, key=row)

    def show(self, frame: Frame | LiveStep) -> None:
        result = frame.result
        success = result.attack_success
        values = {organ: (result.dsc_clean[i], result.dsc_adv[i], success[i]) for i, organ in enumerate(ORGANS)}
        values["mean"] = (result.mean_clean, result.mean_adv, result.mean_attack_success)
        for row, (clean, adv, success) in values.items():
            for column, value in (("clean", clean), ("adv", adv), ("as", success)):
                self.update_cell(row, column, Text(format_score(value), justify="right"))

    def cell_text(self, row: str, column: str) -> str:
        """The text shown in a cell (for tests and the tmux check)."""
        return str(self.get_cell(row, column))


class DscCurve(Widget):
    """Mean DSC of FGSM against eps as vertical bars, the bar nearest the current eps highlighted."""

    DEFAULT_CSS = "DscCurve { height: 1fr; min-height: 3; }"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.curve: Curve | None = None
        self.eps = 0.0

    def show(self, curve: Curve | None, eps: float) -> None:
        if (curve, eps) != (self.curve, self.eps):  # an eps step has usually marked it already
            self.curve, self.eps = curve, eps
            self.refresh()

    def render(self) -> Text:
        width, height = self.content_size
        if self.curve is None:
            return Text("sweeping eps…", style="dim")
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
        labels[5 + plot_width - len(last):] = last
        if self.eps <= eps[-1] + 1e-9:
            position = 5 + marked * bar_width + bar_width // 2
            note = f"▲ {self.eps:.3f}"
            if position + len(note) >= len(labels) - len(last):  # the marker wins over the last eps label
                labels[len(labels) - len(last):] = " " * len(last)
            labels[position:position + len(note)] = note
        else:
            labels.extend(f"  ▶ {self.eps:.3f} (off the plot)")
        text.append("".join(labels), style="dim")
        return text


class ScoresPanel(Vertical):
    """The table and a line with the eps, the realised perturbation size and the step time."""

    DEFAULT_CSS = """
    ScoresPanel { height: 1fr; }
    ScoresPanel #scores-status, ScoresPanel #scores-live { height: 1; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, show_timings: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.show_timings = show_timings

    def compose(self) -> ComposeResult:
        yield ScoresTable(id="scores-table")
        yield Static("", id="scores-status")
        yield Static("", id="scores-live")

    def show(self, frame: Frame) -> None:
        self.query_one(ScoresTable).show(frame)
        step = f"step {frame.seconds * 1000:.0f} ms" if self.show_timings else "step –"
        self.query_one("#scores-status", Static).update(
            f"eps {frame.config.eps:.3f} · L∞ {frame.result.linf:.4f} · L2 {frame.result.l2:.2f} · {step}", layout=False
        )

    def show_live(self, live: LiveStep) -> None:
        """An iterative attack in progress: its iterate's scores, and per-step sparklines of mean DSC and loss."""
        self.query_one(ScoresTable).show(live)
        self.show_live_line(live)

    def show_live_line(self, live: LiveStep) -> None:
        line = self.query_one("#scores-live", Static)
        line.update(live_line(live, line.content_size.width or 46), layout=False)

    def clear_live(self) -> None:
        self.query_one("#scores-live", Static).update("", layout=False)


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
