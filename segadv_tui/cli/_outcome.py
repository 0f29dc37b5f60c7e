"""What a command's JSON says about how complete it is, and what the commands do on Ctrl-C.

Every JSON a command writes carries ``"status"`` (``complete``, or ``partial`` with how far the run got)
and the data the reader left out (``"skipped"``: slice id, file and reason of each; ``"data_problems"``:
every line the reader reported), so that nothing is dropped silently.

Ctrl-C during a command's computation is not a loss: the loops of ``core`` stop and raise
``core.evaluation.Interrupted`` with the result of the finished part (summaries over it only), and
``keep_partial`` writes that beside the JSON the command would have written, with ``.partial`` before the
suffix (``x.json`` -> ``x.partial.json``: a complete earlier result is never replaced by a partial one),
prints one line saying what was done and written, and exits 130. Under torchrun rank 0 alone writes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from core.distributed import is_main_process
from segadv_tui.bug_report import one_line
from segadv_tui.cli import console, err_console

STDOUT = "-"


def partial_path(path: str | os.PathLike) -> Path:
    """Where the partial form of ``path`` goes: ``x.json`` -> ``x.partial.json``. A stream (``-``, a FIFO,
    a character device) is written into as it is: there is no earlier result in it to protect."""
    if os.fspath(path) == STDOUT:
        return Path(STDOUT)
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return path
    return path.with_name(f"{path.stem}.partial{path.suffix}" if path.suffix else f"{path.name}.partial")


def data_fields(dataset) -> dict:
    """The data the reader left out (``core.data.GITractDataset.skipped``) and every problem it reported."""
    return {"skipped": [entry.to_dict() for entry in dataset.skipped], "data_problems": list(dataset.problems)}


def result_json(payload: dict, dataset, partial=None) -> dict:
    """``payload`` (a command's JSON, "command" first) with its "status" and ``data_fields``; ``partial``:
    the ``core.evaluation.Partial`` of an interrupted run."""
    status = partial.to_dict() if partial is not None else {"status": "complete"}
    return {"command": payload.get("command"), **status, **payload, **data_fields(dataset)}


def skipped_note(dataset, json_path: str | os.PathLike | None = None) -> str:
    """"; skipped N slices with problems in the data (...)" for a command's last line, or "" when the reader
    left nothing out (a folder or a file it could not name a slice by counts as one)."""
    count = len(dataset.skipped)
    if not count:
        return ""
    where = f"listed under \"skipped\" in {json_path}" if json_path is not None else f"e.g. {dataset.problems[0]}"
    return f"; skipped {count} slice{'s' if count != 1 else ''} with problems in the data ({where})"


def print_written(paths: Sequence, dataset, json_path: str | os.PathLike | None = None) -> None:
    """The command's last line: the files written and, when the reader left something out, how much."""
    note = skipped_note(dataset, json_path)
    if paths:
        console.print(f"wrote {', '.join(str(path) for path in paths)}{note}", highlight=False, soft_wrap=True,
                      markup=False)
    elif note:
        console.print(note.lstrip("; "), highlight=False, soft_wrap=True, markup=False)


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
    from core.evaluation import Interrupted

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
                written = [*(also(exc.result, partial) if also is not None else []),
                           write_json(target, result_json(payload(exc.result), dataset, partial))]
            except (OSError, SegadvError) as error:
                _say(f"{line}; could not write the finished part: {one_line(error)}")
            else:
                _say(f"{line}: wrote {', '.join(str(path) for path in written)} (marked partial; summaries over the "
                     f"finished part only){skipped_note(dataset, target)}")
        raise typer.Exit(130) from None


def _say(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True, markup=False)
