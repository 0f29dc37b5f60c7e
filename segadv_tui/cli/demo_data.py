"""``segadv demo-data [OUT] [--kind phantom|mni152]``: write a built-in data set.

``phantom`` (the default) is the synthetic abdominal MRI in the UW-Madison Kaggle layout; ``mni152`` is
real brain MRI (the MNI ICBM152 template nilearn ships) in the Decathlon / nnU-Net layout.
"""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app, console, fail

KINDS = ("phantom", "mni152")


@app.command("demo-data")
def demo_data(
    out: Path | None = typer.Argument(
        None, help="Folder to create (must not exist or be empty, unless --overwrite); the same as --out."
    ),
    out_option: Path | None = typer.Option(
        None, "--out", help="Folder to create. mni152 without one: the per-user cache, reused once written."
    ),
    kind: str = typer.Option(
        "phantom",
        "--kind",
        help="phantom: synthetic abdominal MRI, Kaggle layout (train.csv + PNG slices). mni152: grey matter, "
        "white matter and other brain on real MRI (the MNI ICBM152 template, from nilearn: pip install "
        "'segadv[mri]'), Decathlon / nnU-Net layout (dataset.json + NIfTI).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the cases; the same seed gives the same files."),
    size: str = typer.Option("default", "--size", help="default or tiny (fewer, smaller cases)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty folder."),
) -> None:
    """Write a built-in data set: synthetic abdominal MRI (Kaggle layout) or real brain MRI (Decathlon layout)."""
    if kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if out is not None and out_option is not None:
        fail("give the folder once: as OUT or as --out, not both")
    out = out if out is not None else out_option
    if out is None and kind == "phantom":
        fail("give the folder to write (OUT or --out)")
    if seed < 0:
        fail(f"--seed must be a non-negative integer, got {seed}")
    if out is not None:
        if out.exists() and not out.is_dir():
            fail(f"{out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            fail(f"{out} is not empty (pass --overwrite to replace it)")
    if kind == "mni152":
        _write_mni152(out, seed=seed, size=size, overwrite=overwrite)
    else:
        _write_phantom(out, seed=seed, size=size, overwrite=overwrite)


def _write_phantom(out: Path, *, seed: int, size: str, overwrite: bool) -> None:
    from core.data.demo import SIZES, write_demo_dataset
    from core.organs import ORGANS

    if size not in SIZES:
        fail(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    with _progress("writing slices") as progress:
        try:
            root = write_demo_dataset(out, seed=seed, size=size, overwrite=overwrite, progress=progress)
        except OSError as exc:
            fail(f"could not write {out}: {exc}")
    slices, with_organs = _count(root / "train.csv", len(ORGANS))
    console.print(f"wrote {slices} slices ({with_organs} with organs) to {root}", highlight=False)


def _write_mni152(out: Path | None, *, seed: int, size: str, overwrite: bool) -> None:
    from core.data.mni152 import SIZES, mni152_data_dir, template_folder, write_mni152_dataset
    from core.errors import MissingDependency

    if size not in SIZES:
        fail(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    try:
        template_folder()  # before any folder is made: nilearn missing is one line
        with _progress("writing cases") as progress:
            if out is None:
                root = mni152_data_dir(size=size, seed=seed, progress=progress)
            else:
                root = write_mni152_dataset(out, seed=seed, size=size, overwrite=overwrite, progress=progress)
    except MissingDependency as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"could not write {out}: {exc}")
    from core.data.open import open_dataset

    dataset = open_dataset(root)
    size_mb = sum(path.stat().st_size for path in root.rglob("*") if path.is_file()) / 1e6
    console.print(
        f"wrote {len(dataset.cases)} cases, {len(dataset)} slices ({dataset.labels.describe()}), "
        f"{size_mb:.1f} MB, to {root}; its NOTICE holds the template's copyright notice",
        highlight=False,
        soft_wrap=True,
    )


def _progress(what: str):
    """A transient Rich bar whose ``progress(done, total)`` callback the writers call."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextmanager
    def bar():
        columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task("demo", total=None)
            yield lambda done, total: progress.update(task, completed=done, total=total)

    return bar()


def _count(csv_path: Path, rows_per_slice: int) -> tuple[int, int]:
    """(slices, slices with at least one organ) in a train.csv written by the demo."""
    import csv

    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    organ_slices = {row["id"] for row in rows if row["segmentation"]}
    return len(rows) // rows_per_slice, len(organ_slices)
