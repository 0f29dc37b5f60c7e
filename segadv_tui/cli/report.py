"""``segadv report``: runs of the run index written up as ``report.md`` and ``report.html`` in a folder:
their provenance (command line, versions, device, checkpoint hashes, data, configuration), their tables
(``segadv_tui.render.report``) and links to the files they wrote."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app, fail
from segadv_tui.cli._runs import RunsIndex


@app.command()
def report(
    run_ids: list[int] | None = typer.Argument(None, help="Run ids (`segadv runs ls` lists them).", show_default=False),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="Folder for report.md and report.html."),
    last: int | None = typer.Option(None, "--last", "-n", help="The newest N runs (instead of ids)."),
    command: str | None = typer.Option(None, "--command", help="With --last: only the runs of this command."),
    run_index: RunsIndex = None,
) -> None:
    """Write report.md and report.html: the runs' provenance, tables and the files they wrote."""
    from core.files import write_text
    from core.runs.index import RunIndex
    from core.runs.stored import StoredResultError, load_result
    from segadv_tui.cli._outcome import print_written
    from segadv_tui.cli.runs import _records
    from segadv_tui.render.report import RunSection, markdown, page, result_tables

    if bool(run_ids) == (last is not None):
        fail("give run ids or --last N (not both)")
    if last is not None and last < 1:
        fail(f"--last {last} must be at least 1")
    out_dir = out_dir.expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out-dir {str(out_dir)!r} is not a folder")
    with RunIndex(run_index) as index:
        ids = list(run_ids or []) or [record.id for record in index.records(last=last, command=command)]
        if not ids:
            fail(f"no runs recorded in {index.path}")
        records = _records(index, ids, with_result=True)
        sections = []
        for record in records:
            blob = index.stored_result(record.id)
            try:
                result = load_result(blob) if blob is not None else None
            except StoredResultError:
                result = None  # the JSON's tables still show
            sections.append(RunSection(record, result_tables(record, result)))
        index_path = str(index.path)
    folder = out_dir.resolve()
    written = [
        write_text(out_dir / "report.md", markdown(sections, folder, index_path)),
        write_text(out_dir / "report.html", page(sections, folder, index_path)),
    ]
    print_written(written, detail=f" ({len(records)} run(s): {', '.join(str(record.id) for record in records)})")
