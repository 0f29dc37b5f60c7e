"""A bug in segadv, reported one way by the CLI and the explorer: one line for the user, and the full
traceback in a log file of its own in the state folder (``core.paths.state_dir``) for the bug report.

Errors the user can cause are ``core.errors.SegadvError`` and never come here. No torch, no Textual.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path

import core


def one_line(error: BaseException) -> str:
    """An error's message on one line (a ``KeyError`` without its quotes), its type where it has none."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def write_bug_report(error: BaseException) -> Path | None:
    """Write ``error``'s traceback, with the versions and the command line, to a new file in the state
    folder; returns its path, or None when it cannot be written (the caller then shows the traceback)."""
    from core.files import write_text
    from core.paths import state_dir

    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = state_dir() / f"bug-{stamp}-{os.getpid()}.log"
    text = (
        f"segadv {core.__version__} hit a bug at {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
        f"command: {' '.join(sys.argv)}\n"
        f"python {platform.python_version()} on {platform.platform()}\n\n"
        + "".join(traceback.format_exception(type(error), error, error.__traceback__))
    )
    try:
        return write_text(path, text)
    except OSError:
        return None


def bug_message(error: BaseException, log: Path | None) -> str:
    """The one line a user sees for a bug: what failed and where the traceback is."""
    where = f"the traceback is in {log}" if log is not None else "its traceback could not be saved"
    return f"a bug in segadv: {type(error).__name__}: {one_line(error)} ({where}; please report it)"
