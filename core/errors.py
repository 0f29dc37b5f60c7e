"""The one base class of every error a user can cause (bad data, checkpoint, option or name).

Front ends show a ``SegadvError`` as one line (the CLI exits 2, the explorer notifies); anything else
that escapes is a bug in segadv and is reported as one, with the traceback in a log file.
No torch here: front ends import this at start-up.
"""

from __future__ import annotations


class SegadvError(Exception):
    """Bad input from the user; the message names the file, row, option or value."""


class OptionError(SegadvError, ValueError):
    """An option value out of range or not among the choices (eps, steps, method, device, ...)."""


class MissingDependency(SegadvError, ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


def check_choice(value: str, choices, what: str) -> str:
    """``value`` if it is one of ``choices``, else an ``OptionError`` that lists them."""
    if value not in choices:
        raise OptionError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value
