"""What a command writes: its files (``Outputs``: where they go by default, checked before any work, the
last line naming them), what its JSON says about how complete it is, and what it does on Ctrl-C.

Every JSON a command writes carries ``"status"`` (``complete``, or ``partial`` with how far the run got)
and the data the reader left out (``"skipped"``: slice id, file and reason of each; ``"data_problems"``:
every line the reader reported), so that nothing is dropped silently.

Ctrl-C during a command's computation is not a loss: the loops of ``core`` stop and raise
``core.evaluation.scoring.Interrupted`` with the result of the finished part (summaries over it only), and
``keep_partial`` writes that beside the JSON the command would have written, with ``.partial`` before the
suffix (``x.json`` -> ``x.partial.json``: a complete earlier result is never replaced by a partial one),
prints one line saying what was done and written, and exits 130. Under torchrun rank 0 alone writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from core.distributed import is_main_process
from core.files import is_stream
from segadv_tui.bug_report import one_line
from segadv_tui.cli import console, err_console

DEFAULT_OUT_DIR = Path("segadv-out")  # where a command's files go unless told otherwise


def partial_path(path: str | os.PathLike) -> Path:
    """Where the partial form of ``path`` goes: ``x.json`` -> ``x.partial.json``. A stream (``-``, a FIFO,
    a character device) is written into as it is: there is no earlier result in it to protect."""
    path = Path(path).expanduser()
    if is_stream(path):
        return path
    return path.with_name(f"{path.stem}.partial{path.suffix}" if path.suffix else f"{path.name}.partial")


def data_fields(dataset) -> dict:
    """The data the reader left out (``core.data.gitract.GITractDataset.skipped``) and every problem it reported."""
    return {"skipped": [entry.to_dict() for entry in dataset.skipped], "data_problems": list(dataset.problems)}


def result_json(payload: dict, dataset, partial=None) -> dict:
    """``payload`` (a command's JSON, "command" first) with its "status" and ``data_fields``; ``partial``:
    the ``core.evaluation.scoring.Partial`` of an interrupted run."""
    status = partial.to_dict() if partial is not None else {"status": "complete"}
    return {"command": payload.get("command"), **status, **payload, **data_fields(dataset)}


def skipped_note(dataset, json_path: str | os.PathLike | None = None) -> str:
    """ "; skipped N slices with problems in the data (...)" for a command's last line, or "" when the reader
    left nothing out (a folder or a file it could not name a slice by counts as one)."""
    count = len(dataset.skipped)
    if not count:
        return ""
    where = f'listed under "skipped" in {json_path}' if json_path is not None else f"e.g. {dataset.problems[0]}"
    return f"; skipped {count} slice{'s' if count != 1 else ''} with problems in the data ({where})"


def print_written(paths: Sequence, dataset=None, json_path: str | os.PathLike | None = None, detail: str = "") -> None:
    """A command's last line: the files written, what they hold (``detail``) and, when the reader left slices
    out of the data set a result is made over (``dataset``), how many."""
    note = skipped_note(dataset, json_path) if dataset is not None else ""
    if paths:
        console.print(
            f"wrote {', '.join(str(path) for path in paths)}{detail}{note}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    elif note:
        console.print(note.lstrip("; "), highlight=False, soft_wrap=True, markup=False)


class Outputs:
    """The files a command writes, by option name (``json``, ``csv``, ``png``, ``md``, ``out``).

    With ``folder`` (the command's --out-dir), an output not given goes to ``folder/STEM.OPTION`` unless it
    is ``optional``; without, it is written only when given. The options in ``figures`` are figures: PDF,
    SVG or PNG by their extension. ``check`` refuses the paths before any work is done; ``write`` writes
    each output whose path is set, in the order declared, and keeps the paths for the last line."""

    # How each option's content is written (universal saves its delta, its --out, itself).
    WRITERS = {"json": "json", "csv": "csv", "md": "text"}

    def __init__(
        self,
        stem: str,
        folder: Path | None = None,
        *,
        optional: Sequence[str] = (),
        figures: Sequence[str] = ("png",),
        **paths: Path | None,
    ):
        self.stem, self.folder, self.figures = stem, folder, tuple(figures)
        self.paths = {
            option: path if path is not None or folder is None or option in optional else folder / f"{stem}.{option}"
            for option, path in paths.items()
        }
        self.written: list = []

    @property
    def partial_json(self) -> Path:
        """Where Ctrl-C leaves the finished part (as ``partial_path`` of it): --json, else the JSON the
        command would write by default."""
        return self.paths.get("json") or (self.folder or DEFAULT_OUT_DIR) / f"{self.stem}.json"

    def check(self) -> None:
        from segadv_tui.cli._common import check_outputs
        from segadv_tui.render.figure_style import figure_format

        check_outputs(**self.paths)
        for option in self.figures:
            if self.paths.get(option) is not None:
                figure_format(self.paths[option], f"--{option}")

    def name_default(self, option: str, name: str) -> None:
        """The default of an output named only once the work is done (the figure's slice, method, eps)."""
        if self.paths[option] is None:
            self.paths[option] = (self.folder or DEFAULT_OUT_DIR) / name

    def saved(self, path) -> None:
        """A file the command wrote itself (universal's delta), for the last line."""
        self.written.append(path)

    def write(self, dataset, contents: dict[str, Callable[[], Any]]) -> None:
        """Each output in ``contents`` (option -> a function making its content) whose path is set: JSON as
        ``result_json`` of the payload, CSV from (header, rows), Markdown text, figures (a Pillow image as
        PNG, a ``segadv_tui.render.charts.Chart`` as its extension says)."""
        from core.files import write_csv, write_json, write_png, write_text

        for option, path in self.paths.items():
            if option not in contents or path is None:
                continue
            content, kind = contents[option](), "figure" if option in self.figures else self.WRITERS[option]
            if kind == "figure":
                from PIL import Image

                if isinstance(content, Image.Image):
                    write_png(path, content)
                else:
                    from segadv_tui.render.charts import save_chart

                    save_chart(path, content)
            elif kind == "json":
                write_json(path, result_json(content, dataset))
            elif kind == "csv":
                write_csv(path, *content)
            else:
                write_text(path, content)
            self.written.append(path)


@contextmanager
def keep_partial(
    json_path: str | os.PathLike,
    payload: Callable[[Any], dict],
    dataset,
    also: Callable[[Any, Any], list] | None = None,
) -> Iterator[None]:
    """Run the block (a command's computation); on Ctrl-C write what was complete and exit 130.

    ``payload(result)`` is the command's JSON for a result (the same function writes the complete one);
    it goes to ``partial_path(json_path)``, marked partial. ``also(result, partial)`` writes any other
    file the finished part makes (a partial delta) and returns the paths. One line says how far the run
    got and what was written; nothing is written when nothing was finished."""
    from core.errors import SegadvError
    from core.evaluation.scoring import Interrupted

    try:
        yield
    except Interrupted as exc:
        if not is_main_process():  # under torchrun rank 0 alone writes and speaks
            raise typer.Exit(130) from None
        partial = exc.partial
        line = f"interrupted after {partial.done} of {partial.total} {partial.unit}"
        if partial.detail:
            line += f" ({partial.detail})"
        if exc.result is None:
            _say(f"{line}; nothing was finished, nothing written")
        else:
            from core.files import write_json

            target = partial_path(json_path)
            try:
                written = [
                    *(also(exc.result, partial) if also is not None else []),
                    write_json(target, result_json(payload(exc.result), dataset, partial)),
                ]
            except (OSError, SegadvError) as error:
                _say(f"{line}; could not write the finished part: {one_line(error)}")
            else:
                _say(
                    f"{line}: wrote {', '.join(str(path) for path in written)} (marked partial; summaries over the "
                    f"finished part only){skipped_note(dataset, target)}"
                )
        raise typer.Exit(130) from None


def _say(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True, markup=False)
