"""``segadv demo-data OUT``: write the built-in synthetic data set in the Kaggle layout."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app, console, fail


@app.command("demo-data")
def demo_data(
    out: Path = typer.Argument(..., help="Folder to create (must not exist or be empty, unless --overwrite)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic patients; the same seed gives the same files."),
    size: str = typer.Option("default", "--size", help="default (a few hundred slices) or tiny (a few dozen)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty folder."),
) -> None:
    """Write a synthetic abdominal MRI data set (train.csv + 16-bit PNG slices) in the Kaggle layout."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from core.data.demo import SIZES, write_demo_dataset
    from core.organs import ORGANS

    if size not in SIZES:
        fail(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    if seed < 0:
        fail(f"--seed must be a non-negative integer, got {seed}")
    if out.exists() and not out.is_dir():
        fail(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        fail(f"{out} is not empty (pass --overwrite to replace it)")

    columns = (TextColumn("writing slices"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("demo", total=None)
        try:
            root = write_demo_dataset(
                out,
                seed=seed,
                size=size,
                overwrite=overwrite,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except OSError as exc:
            fail(f"could not write {out}: {exc}")

    slices, with_organs = _count(root / "train.csv", len(ORGANS))
    console.print(f"wrote {slices} slices ({with_organs} with organs) to {root}", highlight=False)


def _count(csv_path: Path, rows_per_slice: int) -> tuple[int, int]:
    """(slices, slices with at least one organ) in a train.csv written by the demo."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    organ_slices = {row["id"] for row in rows if row["segmentation"]}
    return len(rows) // rows_per_slice, len(organ_slices)
