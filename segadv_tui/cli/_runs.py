"""The run index in the commands (``core.runs``): every command made by ``_common.prepare`` is recorded,
and ``CommandRun.cached`` serves a computation's result from the index when the same computation was done
before.

The plumbing is shared, not per command: ``recording`` wraps every subcommand (``segadv_tui.cli._Commands``)
and closes the record with how the command ended (done; interrupted on Ctrl-C; failed on an error, a crash
or a non-zero exit), ``begin`` (called by ``prepare``) opens it, ``finished`` (called by ``CommandRun.finish``)
adds the result JSON, the key numbers and the files written. A command opts into the cache with two
options (``RunsIndex``, ``NoCache``) and one call, ``run.cached(key, compute)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from segadv_tui.cli._options import OUTPUT

T = TypeVar("T")
INTERRUPTED_EXIT = 130

# The command running in this process: its command line (set by ``recording``) and its record (by ``begin``).
_argv: list[str] | None = None
_started: Any = None  # core.runs.recorder.Clock
_recorder: Any = None  # core.runs.recorder.RunRecorder
_outcome: dict = {}
_chosen_options: dict = {}  # --runs and --no-cache of the command running


def _chosen(name: str):
    """An option's callback keeping its value for this module (read by ``begin`` and ``cached``)."""

    def keep(value):
        _chosen_options[name] = value
        return value

    return keep


RunsIndex = Annotated[
    Path | None,
    typer.Option(
        "--runs",
        rich_help_panel=OUTPUT,
        callback=_chosen("run_index"),
        help="The run index (SQLite) that records this run and serves cached results; default $SEGADV_RUNS, else "
        "$XDG_DATA_HOME/segadv/runs.sqlite.",
    ),
]
NoCache = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        rich_help_panel=OUTPUT,
        callback=_chosen("no_cache"),
        help="Compute even when the run index holds the result of the same computation (same checkpoint, data, "
        "slices, attack and code).",
    ),
]


def warn(line: str) -> None:
    from segadv_tui.cli import err_console

    err_console.print(f"warning: {line}", highlight=False, soft_wrap=True, markup=False)


def command_line(ctx) -> list[str]:
    """``segadv SUBCOMMAND ARGS...`` as typed, from the group's context before the subcommand is resolved."""
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = ctx.protected_args
    return [ctx.info_name or "segadv", *protected, *ctx.args]


@contextmanager
def recording(ctx) -> Iterator[None]:
    """Around one subcommand: the record ``begin`` opened is closed whatever happens, with the status of
    how the command ended (never left ``running`` by an error)."""
    from core.runs.recorder import Clock

    global _argv, _started, _recorder, _outcome
    _argv, _started, _recorder, _outcome = command_line(ctx), Clock.now(), None, {}
    _chosen_options.clear()
    status, error = "done", None
    try:
        yield
    except typer.Exit as exc:
        if exc.exit_code == INTERRUPTED_EXIT:
            status = "interrupted"
        elif exc.exit_code:
            status, error = "failed", f"exit status {exc.exit_code}"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as exc:
        from segadv_tui.bug_report import one_line

        status, error = "failed", f"{type(exc).__name__}: {one_line(exc)}"
        raise
    finally:
        recorder, outcome = _recorder, _outcome
        _argv, _recorder, _outcome = None, None, {}
        if recorder is not None:
            recorder.close(status, error=error, **(outcome if status == "done" else {}))


def begin(run) -> None:
    """Open the record of ``run`` (a ``_common.CommandRun``) as running: the device, the checkpoints with
    their content hashes, the data's fingerprint, the split and the slices selected."""
    global _recorder
    from core.distributed import is_main_process

    if _argv is None or not is_main_process():  # not under a command; a torchrun rank above 0 records nothing
        return
    from core.devices import describe_device
    from core.runs.keys import selection_fingerprint
    from core.runs.recorder import RunRecorder

    recorder = RunRecorder(_chosen_options.get("run_index"), run.command, _argv, warn, _started)
    _recorder = recorder
    recorder.open(
        device=describe_device(run.device),
        checkpoints=[{"path": str(item.path), "sha256": recorder.file_sha256(item.path)} for item in run.checkpoints],
        data=str(run.dataset.root),
        data_fingerprint=run.dataset.fingerprint(),
        split=run.split,
        selection={
            "slices": len(run.records),
            "fingerprint": selection_fingerprint(run.records),
        },
    )


def cached(run, key: dict, compute: Callable[[], T]) -> T:
    """``compute()``, or the result an earlier run with the same key stored (see ``CommandRun.cached``)."""
    recorder = _recorder
    if recorder is None:
        return compute()
    from core.runs.keys import computation_fields

    delta = (key.get("config") or {}).get("delta")  # the universal method's perturbation: its content counts
    fields = computation_fields(
        run.command,
        key,
        checkpoints=[recorder.file_sha256(item.path) for item in run.checkpoints],
        data_fingerprint=run.dataset.fingerprint(),
        records=run.records,
        device_type=run.device.type,
        delta_sha256=recorder.file_sha256(delta) if delta else None,
    )
    hit = recorder.lookup(fields, use_cache=not _chosen_options.get("no_cache", False))
    if hit is not None:
        from segadv_tui.cli import err_console

        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.started))
        err_console.print(
            f"note: served from the run index {recorder.index_path}: the result of run {hit.run_id} ({when}); "
            "--no-cache computes it again",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        result = hit.result
    else:
        result = compute()
    recorder.keep(result)
    return result  # type: ignore[return-value]


def finished(payload: dict | None, written: list) -> None:
    """What a finished command made: its result JSON (as written, or as it would be), the key numbers of
    it and the files written; kept for the record's close."""
    if _recorder is None:
        return
    from segadv_tui.render.runs import key_numbers

    _outcome.update(
        result_json=payload,
        summary=key_numbers(payload) if payload is not None else {},
        files=[str(Path(path).expanduser().resolve()) if str(path) != "-" else "-" for path in written],
    )
