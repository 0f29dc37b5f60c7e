"""``segadv report``'s pages: runs of the index (``core.runs.index.RunRecord``) as Markdown and as one HTML
file, each run with its provenance, its key numbers, its result table (Table II in the paper's layout, an
attack's per-organ scores, a sweep's DSC against eps) and links to the files it wrote (pictures shown); with
several runs, their numbers side by side and the configuration that differs."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segadv_tui.render.runs import differences_table, numbers_table, record_table, runs_table
from segadv_tui.render.tables import Table, number, table_ii_table

PICTURES = (".png", ".svg", ".jpg", ".jpeg")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; max-width: 100%; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; vertical-align: top; word-break: break-word; }
th, td:first-child { white-space: nowrap; }
th { background: #eee; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
p.caption { color: #555; font-size: 0.85em; margin-top: -1em; } img { max-width: 100%; border: 1px solid #ddd; }
code { overflow-wrap: anywhere; }
"""


@dataclass(frozen=True)
class RunSection:
    """What the report shows of one run: its record, its result's tables and the files it wrote."""

    record: object  # core.runs.index.RunRecord (with result_json)
    tables: list[Table]


def result_tables(record, result=None) -> list[Table]:
    """The tables of a run's result: Table II (from the stored ``result`` object, as ``segadv table`` prints
    it), an attack's per-organ summary, a sweep's mean adversarial DSC per eps and loss (from its JSON)."""
    payload = record.result_json or {}
    if record.command == "table" and result is not None:
        return [table_ii_table(result, title="Table II", caption="DSC before and after the attack; lowest in bold.")]
    summary = payload.get("summary")
    if record.command == "attack" and isinstance(summary, dict):
        names = list(summary.get("dsc_clean") or {})
        rows = [
            (
                name,
                number(summary["dsc_clean"][name]),
                number(summary["dsc_adv"][name]),
                number(summary["attack_success"][name]),
            )
            for name in names
        ]
        rows.append(
            ("mean", number(summary["mean_clean"]), number(summary["mean_adv"]), number(summary["mean_attack_success"]))
        )
        config = payload.get("config", {})
        title = f"{config.get('method_label', '')}, eps {config.get('eps')}, loss {config.get('loss')}"
        caption = f"{summary.get('scored')} of {summary.get('slices')} slices scored"
        return [Table(title, ("label", "DSC clean", "DSC adversarial", "attack success"), tuple(rows), caption=caption)]
    if record.command == "sweep" and isinstance(payload.get("entries"), list):
        losses = list(payload.get("losses") or [])
        rows = []
        for eps in payload.get("eps_values") or []:
            cells = {
                entry["loss"]: entry["summary"].get("mean_adv") for entry in payload["entries"] if entry["eps"] == eps
            }
            rows.append((f"{eps:g}", *(number(cells.get(loss)) for loss in losses)))
        return [Table("mean adversarial DSC against eps", ("eps", *losses), tuple(rows))]
    return []


def _relative(path: str, folder: Path) -> str:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return path


def markdown(sections: Sequence[RunSection], folder: Path, index_path: str) -> str:
    records = [section.record for section in sections]
    lines = [
        "# segadv report",
        "",
        f"{len(records)} run(s) of the run index `{index_path}`, written {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        runs_table(records).to_markdown(),
    ]
    if len(records) > 1:
        lines += [
            "## The runs side by side",
            "",
            numbers_table(records).to_markdown(),
            differences_table(records).to_markdown(),
        ]
    for section in sections:
        record = section.record
        lines += [f"## Run {record.id}: {record.command}", ""]
        lines += [table.to_markdown() for table in section.tables]
        lines += [numbers_table([record]).to_markdown()] if record.summary and not section.tables else []
        lines += ["### Provenance", "", record_table(record).to_markdown()]
        if record.files:
            lines += ["### Files written", ""]
            for path in record.files:
                link = _relative(path, folder)
                lines.append(
                    f"- ![{Path(path).name}]({link})" if path.endswith(PICTURES) else f"- [{Path(path).name}]({link})"
                )
            lines.append("")
    return "\n".join(lines)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.headers)
    body = []
    for r, row in enumerate(table.rows):
        cells = []
        for c, cell in enumerate(row):
            text = html.escape(cell)
            text = f"<b>{text}</b>" if table.is_bold(r, c) else text
            kind = ' class="number"' if table.alignment(c) == "right" else ""
            cells.append(f"<td{kind}>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    caption = f"<caption>{html.escape(table.title)}</caption>" if table.title else ""
    note = f'<p class="caption">{html.escape(table.caption)}</p>' if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"


def page(sections: Sequence[RunSection], folder: Path, index_path: str) -> str:
    records = [section.record for section in sections]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>segadv report</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>segadv report</h1>",
        f"<p>{len(records)} run(s) of the run index <code>{html.escape(index_path)}</code>, written "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}.</p>",
        _html_table(runs_table(records)),
    ]
    if len(records) > 1:
        parts += [
            "<h2>The runs side by side</h2>",
            _html_table(numbers_table(records)),
            _html_table(differences_table(records)),
        ]
    for section in sections:
        record = section.record
        parts.append(f'<h2 id="run-{record.id}">Run {record.id}: {html.escape(record.command)}</h2>')
        parts += [_html_table(table) for table in section.tables]
        if record.summary and not section.tables:  # a result table shows the numbers already
            parts.append(_html_table(numbers_table([record])))
        parts += ["<h3>Provenance</h3>", _html_table(record_table(record))]
        if record.files:
            parts.append("<h3>Files written</h3><ul>")
            for path in record.files:
                link = html.escape(_relative(path, folder), quote=True)
                name = html.escape(Path(path).name)
                shown = f'<br><img src="{link}" alt="{name}">' if path.endswith(PICTURES) else ""
                parts.append(f'<li><a href="{link}">{name}</a>{shown}</li>')
            parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
