"""Tables the app exports: a titled grid of cells written as CSV and Markdown, atomically."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from core.checkpoints import atomic_write
from core.organs import ORGAN_TITLES, ORGANS
from segadv_tui.explorer import Frame


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.headers)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def to_markdown(self) -> str:
        def line(cells) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

        lines = [f"**{self.title}**", "", line(self.headers), line(["---"] * len(self.headers))]
        lines.extend(line(row) for row in self.rows)
        return "\n".join(lines) + "\n"


def number(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def scores_table(frame: Frame) -> Table:
    """The Scores panel of ``frame`` as a table: per organ and mean, DSC clean / adversarial and AS."""
    rows = [
        (ORGAN_TITLES[organ], number(frame.dsc_clean[i]), number(frame.dsc_adv[i]), number(frame.attack_success[i]))
        for i, organ in enumerate(ORGANS)
    ]
    rows.append(("Mean", number(frame.mean_clean), number(frame.mean_adv), number(frame.mean_attack_success)))
    title = f"{frame.slice_id}, {frame.settings.label}, L-inf {frame.linf:.4f}, L2 {frame.l2:.4f}"
    return Table(title, ("Organ", "DSC clean", "DSC adv", "AS"), tuple(rows))


def save_tables(table: Table, stem: Path) -> list[Path]:
    """Write ``stem``.csv and ``stem``.md (each atomically); returns both paths."""
    stem = Path(stem)
    paths = []
    for suffix, text in ((".csv", table.to_csv()), (".md", table.to_markdown())):
        path = stem.with_name(stem.name + suffix)
        atomic_write(path, lambda temp, text=text: temp.write_text(text, encoding="utf-8"))
        paths.append(path)
    return paths
