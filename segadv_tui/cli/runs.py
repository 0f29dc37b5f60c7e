"""``segadv runs``: the run index's records (``core.runs.index``) listed, shown, compared, exported and removed.

Here the index is what the command is about, so a damaged or locked index is an error (one line, exit 2),
not the warning a computing command gives.
"""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app, console, fail
from segadv_tui.cli._runs import RunsIndex

runs_app = typer.Typer(
    help="The run index: every attack, sweep, table, ... run, with its provenance and results.",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")

Ids = typer.Argument(..., help="Run ids (`segadv runs ls` lists them).", show_default=False)


def _index(path: Path | None):
    from core.runs.index import RunIndex

    return RunIndex(path)  # a RunIndexError is a SegadvError: one line, exit 2


def _records(index, run_ids: list[int], *, with_result: bool = False) -> list:
    """The records ``run_ids`` in the order given, or one line naming the ids the index lacks."""
    records = [index.get(run_id, with_result=with_result) for run_id in run_ids]
    missing = [str(run_id) for run_id, record in zip(run_ids, records) if record is None]
    if missing:
        fail(f"no run {', '.join(missing)} in the run index {index.path} (`segadv runs ls` lists the runs)")
    return records


@runs_app.command("ls")
def list_runs(
    last: int | None = typer.Option(None, "--last", "-n", help="Only the newest N runs."),
    command: str | None = typer.Option(None, "--command", help="Only the runs of this command (attack, table, ...)."),
    run_index: RunsIndex = None,
) -> None:
    """List the runs: id, when, command line, status, seconds and key numbers."""
    from segadv_tui.render.runs import runs_table

    if last is not None and last < 1:
        fail(f"--last {last} must be at least 1")
    with _index(run_index) as index:
        records = index.records(last=last, command=command)
        if not records:
            console.print(f"no runs recorded in {index.path}", highlight=False, markup=False)
            return
        console.print(runs_table(records, title=f"runs in {index.path}").to_rich())


@runs_app.command("show")
def show(run_id: int = typer.Argument(..., help="A run id."), run_index: RunsIndex = None) -> None:
    """One run's provenance (command line, versions, device, checkpoint hashes, data, configuration, files) and numbers."""  # noqa: E501
    from segadv_tui.render.runs import numbers_table, record_table

    with _index(run_index) as index:
        (record,) = _records(index, [run_id])
    console.print(record_table(record).to_rich())
    if record.summary:
        console.print(numbers_table([record]).to_rich())


@runs_app.command("compare")
def compare(run_ids: list[int] = Ids, run_index: RunsIndex = None) -> None:
    """Runs side by side: their key numbers, and the configuration keys that differ between them."""
    from segadv_tui.render.runs import differences_table, numbers_table

    if len(run_ids) < 2:
        fail("compare needs at least two run ids")
    with _index(run_index) as index:
        records = _records(index, run_ids)
    console.print(numbers_table(records, title=f"runs {', '.join(map(str, run_ids))}").to_rich())
    console.print(differences_table(records).to_rich())


@runs_app.command("export")
def export(
    run_ids: list[int] = Ids,
    csv_path: Path | None = typer.Option(None, "--csv", help="Write the runs' result rows as CSV."),
    parquet_path: Path | None = typer.Option(None, "--parquet", help="Write them as Parquet (needs pyarrow)."),
    run_index: RunsIndex = None,
) -> None:
    """Write the runs' result rows (an attack's slices, Table II's models, a sweep's points), one file for all."""
    from segadv_tui.cli._common import check_outputs
    from segadv_tui.cli._outcome import print_written
    from segadv_tui.render.runs import export_rows

    if csv_path is None and parquet_path is None:
        fail("give --csv PATH or --parquet PATH")
    if parquet_path is not None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            fail(
                "--parquet needs pyarrow, which is not installed (pip install 'segadv[parquet]')"
                "; --csv works without it"
            )
    check_outputs(csv=csv_path, parquet=parquet_path)
    with _index(run_index) as index:
        records = _records(index, run_ids, with_result=True)
    header, rows = export_rows(records)
    written = []
    if csv_path is not None:
        from core.files import write_csv

        written.append(write_csv(csv_path, header, rows))
    if parquet_path is not None:
        written.append(_write_parquet(parquet_path, header, rows))
    print_written(written, detail=f" ({len(rows)} rows of {len(records)} runs)")


def _write_parquet(path: Path, header: list[str], rows: list[list]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.files import atomic_write

    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    table = pa.table({name: _column(values) for name, values in columns.items()})
    return atomic_write(path, lambda stream: pq.write_table(table, stream))


def _column(values: list):
    """A column Parquet can type: numbers and booleans stay themselves; a mixed column becomes text."""
    kinds = {type(value) for value in values if value is not None}
    if kinds and not kinds <= {int, float} and len(kinds) > 1:
        return [None if value is None else str(value) for value in values]
    return values


@runs_app.command("rm")
def remove(run_ids: list[int] = Ids, run_index: RunsIndex = None) -> None:
    """Remove runs from the index (with the results they hold: a later rerun computes again)."""
    with _index(run_index) as index:
        _records(index, run_ids)
        removed = index.remove(run_ids)
    console.print(f"removed run{'s' if len(removed) != 1 else ''} {', '.join(map(str, removed))}", highlight=False)
