"""Tables the front ends show and export, formatted once for the CLI and the TUI: a titled grid of cells
(some in bold or a colour) printed by Rich and written as CSV and Markdown, the scores of one frame, and
the paper's Table II."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from core.names import LOSS_TITLES

if TYPE_CHECKING:
    from core.evaluation.label_split import LabelSplit

# A missing number in a table; JSON holds null and CSV an empty cell (``core.files``).
MISSING = "n/a"


def number(value: float | None, digits: int = 4, *, signed: bool = False) -> str:
    """A number as every table, heatmap and figure of segadv writes it: ``value`` to ``digits`` decimals
    (``signed``: with its sign, a change), "n/a" where undefined (None, NaN, inf). Zero is never "-0.000":
    a value that rounds to zero from below (or is -0.0) is written as zero."""
    if value is None or not math.isfinite(value):
        return MISSING
    if round(value, digits) == 0:
        value = 0.0
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_score(value: float | None) -> str:
    """A DSC / AS value as the explorer shows it: three decimals, "n/a" where undefined."""
    return number(value, 3)


def split_line(split: LabelSplit | None) -> str:
    """The slice's DSC split by its sources (``core.evaluation.label_split``), clean → adversarial: the mean
    DSC over the labels in the reference, and how many of the absent ones are predicted ("halluc."; "" when
    the slice is not scored). Short: it shares the Scores panel's title line; the exported and copied scores
    table carries it in the same words (``scores_table``)."""
    if split is None or split.present_pairs + split.absent_pairs == 0:
        return ""
    text = f"present {format_score(split.damage_clean)}→{format_score(split.damage_adv)}"
    if not split.absent_pairs:
        return f"{text} · none absent"
    absent = split.absent_pairs
    clean, adv = (round(share * absent) for share in (split.hallucination_clean, split.hallucination_adv))
    return f"{text} · halluc. {clean}/{absent}→{adv}/{absent}"


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    bold: tuple[frozenset[int], ...] = ()  # per row, the columns set in bold
    caption: str = ""
    justify: tuple[str, ...] = ()  # per column, "left" or "right"; default: the first left, the numbers right
    sections: frozenset[int] = frozenset()  # the rows a rule follows (a group's last)
    colours: tuple[dict[int, str], ...] = ()  # per row, a Rich colour per column (a check's verdict)

    def is_bold(self, row: int, column: int) -> bool:
        return 0 <= row < len(self.bold) and column in self.bold[row]

    def alignment(self, column: int) -> str:
        return self.justify[column] if self.justify else "left" if column == 0 else "right"

    def style(self, row: int, column: int) -> str:
        """The cell's Rich style: bold, a colour, both, or none ("")."""
        colour = self.colours[row].get(column) if row < len(self.colours) else None
        return " ".join(filter(None, ("bold" if self.is_bold(row, column) else "", colour)))

    def styled_row(self, row: int) -> list:
        """The cells of ``row`` as Rich ``Text`` styled where the table says (for Textual's tables; the text is
        never read as markup)."""
        from rich.text import Text

        return [Text(cell, style=self.style(row, i)) for i, cell in enumerate(self.rows[row])]

    def to_rich(self, title: str | None = None, *, title_justify: str = "left", overflow: str = "ellipsis"):
        """A Rich table: columns aligned as ``justify`` says, the caption below, a rule after each section."""
        from rich.table import Table as RichTable
        from rich.text import Span, Text

        table = RichTable(
            title=self.title if title is None else title,
            title_justify=title_justify,
            caption=self.caption or None,
            caption_justify="left",
        )
        for index, column in enumerate(self.headers):
            table.add_column(column, justify=self.alignment(index), overflow=overflow)
        for row in range(len(self.rows)):
            # The style spans the text alone, as Rich markup's does: the column's padding stays plain.
            cells = [
                Text(cell, spans=[Span(0, len(cell), style)] if (style := self.style(row, i)) else [])
                for i, cell in enumerate(self.rows[row])
            ]
            table.add_row(*cells, end_section=row in self.sections)
        return table

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows([("" if cell == MISSING else cell) for cell in row] for row in self.rows)
        return buffer.getvalue()

    def to_markdown(self) -> str:
        def line(cells) -> str:
            return "| " + " | ".join(cells) + " |"

        def escaped(cells) -> list[str]:
            return [str(c).replace("|", "\\|") for c in cells]

        lines = [f"**{self.title}**", ""] if self.title else []
        rule = ["---" if self.alignment(i) == "left" else "---:" for i in range(len(self.headers))]
        lines += [line(escaped(self.headers)), line(rule)]
        for r, row in enumerate(escaped(row) for row in self.rows):
            lines.append(line(f"**{c}**" if self.is_bold(r, i) else c for i, c in enumerate(row)))
        if self.caption:
            lines += ["", self.caption]
        return "\n".join(lines) + "\n"


def scores_table(frame) -> Table:
    """The Scores panel of ``frame`` (``segadv_tui.frames.Frame``): per label of its result's label set and
    mean, DSC clean / adversarial and AS; the caption, the panel title's split of the DSC (``split_line``)."""
    from core.evaluation.label_split import label_split
    from core.wording import label_noun

    result = frame.result
    success = result.attack_success
    rows = [
        (label.title, number(result.dsc_clean[i]), number(result.dsc_adv[i]), number(success[i]))
        for i, label in enumerate(result.labels.labels)
    ]
    rows.append(("Mean", number(result.mean_clean), number(result.mean_adv), number(result.mean_attack_success)))
    title = f"{frame.slice_id}, {frame.config.label}, L-inf {result.linf:.4f}, L2 {result.l2:.4f}"
    if frame.scored_on is not None:  # a transfer: whose masks these scores are
        title += f", crafted on {PurePath(frame.checkpoint).stem}, scored on {PurePath(frame.scored_on).stem}"
    headers = (label_noun(result.labels).capitalize(), "DSC clean", "DSC adv", "AS")
    return Table(title, headers, tuple(rows), caption=split_line(label_split([result])))


def table_ii_table(table, *, title: str = "", caption: str = "", with_success: bool = False) -> Table:
    """``core.evaluation.scoring.TableII`` in the paper's layout: model, parameters, clean DSC, then the DSC after
    the attack per loss (``with_success``: and its attack success). The best attack, the lowest DSC, is in
    bold: every loss that ties for it (an arbitrary pick would claim a difference there is none)."""
    method = table.config.entry.title
    if "loss" in table.config.entry.parameters:
        columns = [f"{method} {LOSS_TITLES[loss]}" for loss in table.losses]
    else:  # its own objective: one column, named by it
        columns = [f"{method} ({table.config.objective_label})"]
    headers = ("Model", "Parameters", "Normal", *columns)
    titles = [row.title for row in table.rows]
    rows, bold = [], []
    for row in table.rows:
        # Two checkpoints of one architecture would share a title: name the files to tell them apart.
        name = row.title if titles.count(row.title) == 1 else f"{row.title} ({row.label})"
        success = row.attack_success
        cells = [_adversarial_cell(row.dsc_adv[loss], success[loss], with_success) for loss in table.losses]
        rows.append((name, f"{row.params / 1e6:.2f}M", number(row.dsc_clean), *cells))
        lowest = _lowest(row.dsc_adv[loss] for loss in table.losses)
        bold.append(
            frozenset(
                3 + i for i, loss in enumerate(table.losses) if lowest is not None and row.dsc_adv[loss] == lowest
            )
        )
    return Table(title, headers, tuple(rows), tuple(bold), caption)


def _adversarial_cell(adv: float | None, success: float | None, with_success: bool) -> str:
    if not with_success or adv is None:
        return number(adv)
    return f"{adv:.4f} (AS {number(success, 3)})"


def _lowest(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min(finite) if finite else None


def save_tables(table: Table, stem: Path) -> list[Path]:
    """Write ``stem``.csv and ``stem``.md (each atomically); returns both paths."""
    from core.files import write_text

    stem = Path(stem)
    return [
        write_text(stem.with_name(stem.name + suffix), text)
        for suffix, text in ((".csv", table.to_csv()), (".md", table.to_markdown()))
    ]
